//! The `clientflow` binary: everything lives in the application library.

fn main() -> std::process::ExitCode {
    clientflow::cli::main()
}
