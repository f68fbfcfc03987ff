//! The private PostgreSQL cluster used when no database is configured.
//!
//! It lives under `<data_dir>/postgres`, listens on a Unix socket only (no TCP), and the socket
//! directory is mode 0700, so only the operating-system user that runs the cluster (and root)
//! can connect. When ClientFlow is started as root, the PostgreSQL processes run as the
//! unprivileged `postgres` user (PostgreSQL refuses to run as root, rightly).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::postgres::PgConnectOptions;

/// The superuser created by `initdb` inside the private cluster.
pub const SUPERUSER: &str = "clientflow_admin";
const PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl in {searched}). \
         Install PostgreSQL (Debian/Ubuntu: `apt install postgresql`), point \
         CLIENTFLOW_DATABASE__POSTGRES_BIN_DIR at the directory holding initdb, or set \
         DATABASE_URL to an existing server"
    )]
    NoBinaries { searched: String },
    #[error(
        "ClientFlow runs as root, and PostgreSQL must not: create an unprivileged `postgres` \
         user (Debian's postgresql package does), run ClientFlow as a normal user, or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    #[error("`runuser` is needed to start PostgreSQL as the postgres user when running as root (package util-linux)")]
    NoRunuser,
    #[error("{step} failed: {detail}")]
    Command { step: String, detail: String },
    #[error("{0}")]
    Io(String),
}

/// A private cluster on disk.
#[derive(Debug, Clone)]
pub struct PrivateCluster {
    root: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    /// `Some((uid, gid, name))` when the cluster runs as another user than this process.
    run_as: Option<(u32, u32, String)>,
    durable: bool,
}

impl PrivateCluster {
    /// Describes (but doesn't start) the cluster under `data_dir/postgres`.
    ///
    /// `durable = false` turns off fsync: only for throwaway test clusters.
    pub fn new(data_dir: &Path, bin_dir: Option<&Path>, durable: bool) -> Result<Self, ClusterError> {
        let bin_dir = match bin_dir {
            Some(dir) => dir.to_path_buf(),
            None => find_bin_dir()?,
        };
        if !bin_dir.join("initdb").exists() || !bin_dir.join("pg_ctl").exists() {
            return Err(ClusterError::NoBinaries { searched: bin_dir.display().to_string() });
        }
        fs::create_dir_all(data_dir).map_err(|e| io_err("create the data directory", data_dir, e))?;
        let data_dir = fs::canonicalize(data_dir).map_err(|e| io_err("resolve the data directory", data_dir, e))?;
        let root = data_dir.join("postgres");
        let pgdata = root.join("data");
        let mut socket_dir = root.join("run");
        // Unix socket paths are limited to ~107 bytes; fall back to a short private directory.
        if socket_dir.join(format!(".s.PGSQL.{PORT}")).as_os_str().len() > 100 {
            let digest = crate::platform::crypto::sha256_hex(root.as_os_str().as_encoded_bytes());
            socket_dir = PathBuf::from(format!("/tmp/clientflow-pg-{}", &digest[..16]));
        }
        let run_as = if nix::unistd::geteuid().is_root() {
            let user =
                nix::unistd::User::from_name("postgres").ok().flatten().ok_or(ClusterError::NoUnprivilegedUser)?;
            Some((user.uid.as_raw(), user.gid.as_raw(), user.name))
        } else {
            None
        };
        Ok(Self { root, pgdata, socket_dir, bin_dir, run_as, durable })
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Connection options for the cluster's superuser over the socket.
    pub fn admin_options(&self) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.socket_dir).port(PORT).username(SUPERUSER).database("postgres")
    }

    /// Options for `role` on `database` over the socket (no password: the socket directory's
    /// permissions are the access control).
    pub fn options_for(&self, role: &str, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.socket_dir).port(PORT).username(role).database(database)
    }

    /// Initializes the cluster if needed and starts it if it isn't running. Returns whether
    /// this call started it (and so should stop it on shutdown). Safe to call from several
    /// processes at once.
    pub fn ensure_running(&self) -> Result<bool, ClusterError> {
        fs::create_dir_all(&self.root).map_err(|e| io_err("create", &self.root, e))?;
        if self.run_as.is_some() {
            // The postgres user must be able to reach its directory through ours.
            if let Some(parent) = self.root.parent() {
                let mode = fs::metadata(parent).map(|m| m.permissions().mode()).unwrap_or(0o700);
                if mode & 0o001 == 0 {
                    set_mode(parent, (mode | 0o711) & 0o7777)?;
                }
            }
        }
        self.chown(&self.root)?;
        set_mode(&self.root, 0o700)?;
        let lock_path = self.root.join(".lock");
        let lock = File::create(&lock_path).map_err(|e| io_err("create", &lock_path, e))?;
        lock.lock().map_err(|e| io_err("lock", &lock_path, e))?;

        if !self.pgdata.join("PG_VERSION").exists() {
            self.initdb()?;
        }
        for dir in [&self.socket_dir, &self.root.join("log")] {
            fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
            self.chown(dir)?;
            set_mode(dir, 0o700)?;
        }
        if self.is_running() {
            return Ok(false);
        }
        let log = self.root.join("log").join("postgresql.log");
        let mut options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c unix_socket_permissions=0700 -p {PORT} -c max_connections=300",
            self.socket_dir.display()
        );
        if !self.durable {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let pg_ctl = self.bin_dir.join("pg_ctl");
        self.run(
            "starting PostgreSQL",
            Command::new(pg_ctl)
                .arg("start")
                .arg("-w")
                .args(["-t", "60"])
                .arg("-D")
                .arg(&self.pgdata)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(options),
        )
        .map_err(|e| match e {
            ClusterError::Command { step, detail } => ClusterError::Command {
                step,
                detail: format!("{detail}\nlast lines of {}:\n{}", log.display(), tail(&log, 15)),
            },
            other => other,
        })?;
        Ok(true)
    }

    pub fn is_running(&self) -> bool {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        self.run("pg_ctl status", Command::new(pg_ctl).arg("status").arg("-D").arg(&self.pgdata)).is_ok()
    }

    /// Stops the cluster (fast shutdown: open transactions roll back).
    pub fn stop(&self) -> Result<(), ClusterError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        self.run(
            "stopping PostgreSQL",
            Command::new(pg_ctl).arg("stop").args(["-m", "fast", "-w"]).arg("-D").arg(&self.pgdata),
        )
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        if self.pgdata.exists() {
            // A previous initdb died half-way; start over.
            fs::remove_dir_all(&self.pgdata).map_err(|e| io_err("remove", &self.pgdata, e))?;
        }
        let initdb = self.bin_dir.join("initdb");
        self.run(
            "initdb",
            Command::new(initdb)
                .arg("-D")
                .arg(&self.pgdata)
                .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8"])
                .args(["--auth-local=trust", "--auth-host=reject", "--data-checksums"]),
        )
    }

    fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some((uid, gid, _)) = &self.run_as {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid)).map_err(|e| io_err("chown", path, e))?;
        }
        Ok(())
    }

    fn run(&self, step: &str, command: &mut Command) -> Result<(), ClusterError> {
        let mut command = match &self.run_as {
            None => std::mem::replace(command, Command::new("true")),
            Some((_, _, user)) => {
                let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                    .into_iter()
                    .find(|p| Path::new(p).exists())
                    .ok_or(ClusterError::NoRunuser)?;
                let mut wrapped = Command::new(runuser);
                wrapped.args(["-u", user, "--"]).arg(command.get_program()).args(command.get_args());
                wrapped
            }
        };
        // Not inside our data directory's cwd: postgres as another user may not be able to read it.
        command.current_dir("/");
        let output =
            command.output().map_err(|e| ClusterError::Command { step: step.into(), detail: e.to_string() })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ClusterError::Command {
                step: step.into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
                .trim()
                .to_string(),
            })
        }
    }
}

fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let mut searched = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    // Debian installs server binaries per major version, off the PATH.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    for (_, dir) in versions {
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    for dir in ["/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin"] {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    Err(ClusterError::NoBinaries { searched: searched.join(", ") })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_err("chmod", path, e))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ClusterError {
    ClusterError::Io(format!("cannot {what} {}: {e}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
