//! The `clientflow` binary: everything lives in the application library.

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers (rows, JSON, TLS records), where glibc's malloc took an eighth to a quarter of the
/// server's time (measured with `cargo bench --bench api_tasks`: `docs/security/api.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clientflow::cli::main()
}
