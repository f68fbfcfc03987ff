//! The private PostgreSQL cluster used when no database is configured.
//!
//! It lives under `<data_dir>/postgres`, listens on a Unix socket only (no TCP), and the socket
//! directory is mode 0700, so only the operating-system user that runs the cluster (and root)
//! can connect. When ClientFlow is started as root, the PostgreSQL processes run as the
//! unprivileged `postgres` user (PostgreSQL refuses to run as root, rightly).
//!
//! **Where.** That user must be able to reach the cluster's files. When it can't reach the data
//! directory — a clone under root's own home (mode 0700) is the usual case — a new cluster is
//! kept in `/var/lib/clientflow/<digest of the data directory's path>` (owned by `postgres`,
//! mode 0700) and `<data_dir>/postgres` is a symbolic link to it. The data directory's own
//! permissions are left alone.
//!
//! **Who stops it.** The cluster under a data directory is the installation's, not the
//! process's that happened to start it. Every process that uses it holds a [`ClusterUse`]: a
//! shared `flock` on `<cluster>/.in-use`, which the kernel releases however the process ends
//! (a `kill -9` included). Ending a use takes the start/stop lock, gives up the shared lock and
//! tries for an exclusive one: only when no other process uses the cluster does it stop it. So
//! `serve` stops on shutdown a cluster that an earlier, crashed `serve` left running; a command
//! run beside a server never stops the server's cluster; and a command run alone stops the
//! cluster it started.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::postgres::PgConnectOptions;

/// The superuser created by `initdb` inside the private cluster.
pub const SUPERUSER: &str = "clientflow_admin";
/// The port in the socket's name (the cluster listens on no TCP port).
pub const PORT: u16 = 5432;

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
    #[error(
        "PostgreSQL runs as the `{user}` user, which can't reach {path} (a directory above it is \
         not searchable by others). Make the directories above it searchable (chmod o+x), or stop \
         ClientFlow, move {path} to a directory `{user}` can reach and leave a symbolic link to it \
         in its place"
    )]
    Unreachable { user: String, path: String },
    #[error(
        "{cluster} holds a PostgreSQL cluster made for the data directory {data_dir}, but \
         {data_dir}/postgres no longer links to it (was the data directory removed?). To keep that \
         database, link it again: `ln -s {cluster} {data_dir}/postgres`. To start afresh, stop it \
         if it runs (`runuser -u postgres -- pg_ctl stop -D {cluster}/data`) and remove {cluster}"
    )]
    Orphaned { cluster: String, data_dir: String },
    #[error("{step} failed: {detail}")]
    Command { step: String, detail: String },
    #[error("{0}")]
    Io(String),
}

/// Where clusters are kept whose data directory the `postgres` user can't reach.
pub const RELOCATED_BASE: &str = "/var/lib/clientflow";

/// A private cluster on disk.
#[derive(Debug, Clone)]
pub struct PrivateCluster {
    /// `<data_dir>/postgres`: the cluster itself, or a symbolic link to it.
    link: PathBuf,
    /// The cluster's own directory (`link`, or where it points).
    root: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    /// `Some((uid, gid, name))` when the cluster runs as another user than this process.
    run_as: Option<(u32, u32, String)>,
    durable: bool,
    /// Server settings passed on the command line (`-c name=value`), so they live with the
    /// process that starts the cluster and never in its files: a copy restored from a backup
    /// doesn't inherit them (WAL archiving into the original's repository, above all).
    settings: Vec<(String, String)>,
    /// Environment of the cluster's processes and of the commands run for it (the backup
    /// repository's passphrase reaches `archive_command` this way, never through a file
    /// outside the secrets directory).
    env: Vec<(String, crate::secret::Secret)>,
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
        let run_as = if nix::unistd::geteuid().is_root() {
            let user =
                nix::unistd::User::from_name("postgres").ok().flatten().ok_or(ClusterError::NoUnprivilegedUser)?;
            Some((user.uid.as_raw(), user.gid.as_raw(), user.name))
        } else {
            None
        };
        let link = data_dir.join("postgres");
        let unreachable = || run_as.as_ref().is_some_and(|(_, _, user)| !reachable_by(user, &data_dir));
        let root = match fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&link).map_err(|e| io_err("read the link", &link, e))?;
                data_dir.join(target)
            }
            // A start that failed before clusters could be kept elsewhere leaves an
            // uninitialized directory here; it holds nothing, and the postgres user can't use it.
            Ok(m) if m.is_dir() && is_leftover(&link) && unreachable() => relocated_root(&data_dir),
            Ok(m) if m.is_dir() => link.clone(),
            Ok(_) => return Err(ClusterError::Io(format!("{} is not a directory", link.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if unreachable() {
                    let root = relocated_root(&data_dir);
                    if root.join("data").join("PG_VERSION").exists() {
                        return Err(ClusterError::Orphaned {
                            cluster: root.display().to_string(),
                            data_dir: data_dir.display().to_string(),
                        });
                    }
                    root
                } else {
                    link.clone()
                }
            }
            Err(e) => return Err(io_err("inspect", &link, e)),
        };
        let pgdata = root.join("data");
        let mut socket_dir = root.join("run");
        // Unix socket paths are limited to ~107 bytes; fall back to a short private directory.
        if socket_dir.join(format!(".s.PGSQL.{PORT}")).as_os_str().len() > 100 {
            let digest = crate::crypto::sha256_hex(root.as_os_str().as_encoded_bytes());
            socket_dir = PathBuf::from(format!("/tmp/clientflow-pg-{}", &digest[..16]));
        }
        Ok(Self { link, root, pgdata, socket_dir, bin_dir, run_as, durable, settings: Vec::new(), env: Vec::new() })
    }

    /// The same cluster, started with these server settings and this environment (see the
    /// fields' documentation). They apply when this process is the one that starts it.
    pub fn with_settings(mut self, settings: Vec<(String, String)>, env: Vec<(String, crate::secret::Secret)>) -> Self {
        self.settings = settings;
        self.env = env;
        self
    }

    /// The directory holding `initdb`, `pg_ctl` and `postgres`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The name of the user the cluster's processes run as, when not this process's.
    pub fn run_as_user(&self) -> Option<&str> {
        self.run_as.as_ref().map(|(_, _, name)| name.as_str())
    }

    /// Creates the cluster's directory (and its link) with the ownership and modes a start
    /// needs, without initializing or starting anything: where a restore writes a cluster.
    pub fn prepare(&self) -> Result<(), ClusterError> {
        if self.is_linked() {
            self.prepare_linked()?;
        } else {
            fs::create_dir_all(&self.root).map_err(|e| io_err("create", &self.root, e))?;
            if self.run_as.is_some()
                && let Some(parent) = self.root.parent()
            {
                let mode = fs::metadata(parent).map(|m| m.permissions().mode()).unwrap_or(0o700);
                if mode & 0o001 == 0 {
                    set_mode(parent, (mode | 0o711) & 0o7777)?;
                }
            }
        }
        self.chown(&self.root)?;
        set_mode(&self.root, 0o700)?;
        if let Some((_, _, user)) = &self.run_as
            && !reachable_by(user, &self.root)
        {
            return Err(ClusterError::Unreachable { user: user.clone(), path: self.root.display().to_string() });
        }
        Ok(())
    }

    /// Creates `dir` (and its parents) owned by the cluster's user, mode 0700.
    pub fn make_owned_dir(&self, dir: &Path) -> Result<(), ClusterError> {
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        self.chown(dir)?;
        set_mode(dir, 0o700)
    }

    /// Writes `contents` to `path` owned by the cluster's user, mode 0600.
    pub fn write_owned_file(&self, path: &Path, contents: &[u8]) -> Result<(), ClusterError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err("write", &tmp, e))?;
        file.write_all(contents).map_err(|e| io_err("write", &tmp, e))?;
        drop(file);
        self.chown(&tmp)?;
        fs::rename(&tmp, path).map_err(|e| io_err("write", path, e))
    }

    /// Runs `command` as the cluster's user, with the cluster's environment; its standard
    /// output when it succeeds.
    pub fn run_as_owner(&self, step: &str, command: &mut Command) -> Result<String, ClusterError> {
        self.run_capturing(step, command)
    }

    /// The cluster's own directory: `<data_dir>/postgres`, or where that link points.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the cluster is kept outside the data directory (linked from it).
    pub fn is_linked(&self) -> bool {
        self.root != self.link
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

    /// Initializes the cluster if needed, starts it if it isn't running, and registers this
    /// process as one of its users until the returned [`ClusterUse`] ends (or is dropped). Safe
    /// to call from several processes at once.
    pub fn ensure_running(&self) -> Result<ClusterUse, ClusterError> {
        self.prepare()?;
        let lock = self.lock()?;
        let in_use = self.root.join(".in-use");
        let users = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&in_use)
            .map_err(|e| io_err("create", &in_use, e))?;
        // Never waits: a process holds it exclusively only while it holds `lock`.
        users.lock_shared().map_err(|e| io_err("lock", &in_use, e))?;
        let mut used = ClusterUse { cluster: self.clone(), users: Some(users), started: false };
        // Should starting fail half-way, dropping `used` stops what was started (after `lock`
        // is released: ending a use takes it again).
        used.started = match self.start_locked() {
            Ok(started) => started,
            Err(e) => {
                drop(lock);
                drop(used);
                return Err(e);
            }
        };
        drop(lock);
        Ok(used)
    }

    /// Creates the cluster's directory outside the data directory and the link to it.
    fn prepare_linked(&self) -> Result<(), ClusterError> {
        if let Some(base) = self.root.parent() {
            fs::create_dir_all(base).map_err(|e| io_err("create", base, e))?;
            // Searchable (not listable) by the postgres user on its way to its own directory.
            let mode = fs::metadata(base).map(|m| m.permissions().mode()).unwrap_or(0o700);
            if mode & 0o001 == 0 {
                set_mode(base, (mode | 0o711) & 0o7777)?;
            }
        }
        fs::create_dir_all(&self.root).map_err(|e| io_err("create", &self.root, e))?;
        let data_dir = self.link.parent().unwrap_or(Path::new("/"));
        let note = self.root.join("CLIENTFLOW_DATA_DIR");
        fs::write(&note, format!("{}\n", data_dir.display())).map_err(|e| io_err("write", &note, e))?;
        if fs::symlink_metadata(&self.link).is_ok_and(|m| m.is_dir()) && is_leftover(&self.link) {
            // What a start that failed left behind (see `new`): our own lock files and empty
            // directories, never a cluster.
            match fs::remove_dir_all(&self.link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err("remove", &self.link, e)),
                _ => {}
            }
        }
        match std::os::unix::fs::symlink(&self.root, &self.link) {
            Ok(()) => tracing::info!(
                cluster = %self.root.display(),
                link = %self.link.display(),
                "the postgres user can't reach the data directory: the private PostgreSQL cluster is kept in {} \
                 (linked from {})",
                self.root.display(),
                self.link.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another process made it at the same moment; it must point here.
                if fs::read_link(&self.link).ok().map(|t| data_dir.join(t)) != Some(self.root.clone()) {
                    return Err(ClusterError::Io(format!(
                        "{} exists and does not link to {}",
                        self.link.display(),
                        self.root.display()
                    )));
                }
            }
            Err(e) => return Err(io_err("link", &self.link, e)),
        }
        Ok(())
    }

    /// The lock that serializes starting and stopping the cluster between processes.
    fn lock(&self) -> Result<File, ClusterError> {
        let lock_path = self.root.join(".lock");
        let lock = File::create(&lock_path).map_err(|e| io_err("create", &lock_path, e))?;
        lock.lock().map_err(|e| io_err("lock", &lock_path, e))?;
        Ok(lock)
    }

    /// Initializes and starts the cluster (holding [`Self::lock`]); whether it started it.
    fn start_locked(&self) -> Result<bool, ClusterError> {
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
        for (name, value) in &self.settings {
            // pg_ctl hands the options to a shell: single-quote the value.
            options.push_str(&format!(" -c {name}='{}'", value.replace('\'', "'\\''")));
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

    /// Stops the cluster (fast shutdown: open transactions roll back), whoever uses it. Ending
    /// a [`ClusterUse`] is the way to stop it when done with it.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let postmaster = self.postmaster_pid();
        let pg_ctl = self.bin_dir.join("pg_ctl");
        self.run(
            "stopping PostgreSQL",
            Command::new(pg_ctl).arg("stop").args(["-m", "fast", "-w"]).arg("-D").arg(&self.pgdata),
        )?;
        // `pg_ctl -w` returns once `postmaster.pid` is gone, which the postmaster removes just
        // before it exits: wait for the exit itself, so "stopped" means no process is left.
        if let Some(pid) = postmaster {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while process_alive(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The postmaster's process id, from the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
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
        self.run_capturing(step, command).map(|_| ())
    }

    fn run_capturing(&self, step: &str, command: &mut Command) -> Result<String, ClusterError> {
        let envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)> =
            command.get_envs().map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string()))).collect();
        let mut command = match &self.run_as {
            None => std::mem::replace(command, Command::new("true")),
            Some((_, _, user)) => {
                let runuser = runuser().ok_or(ClusterError::NoRunuser)?;
                let mut wrapped = Command::new(runuser);
                wrapped.args(["-u", user, "--"]).arg(command.get_program()).args(command.get_args());
                wrapped
            }
        };
        for (k, v) in envs {
            match v {
                Some(v) => command.env(k, v),
                None => command.env_remove(k),
            };
        }
        for (k, v) in &self.env {
            command.env(k, v.expose());
        }
        // Not inside our data directory's cwd: postgres as another user may not be able to read it.
        command.current_dir("/");
        let output =
            command.output().map_err(|e| ClusterError::Command { step: step.into(), detail: e.to_string() })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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

/// A process's use of the private cluster (see the module's documentation). Ending it —
/// [`ClusterUse::end`], or dropping it — stops the cluster when no other process uses it.
#[derive(Debug)]
pub struct ClusterUse {
    cluster: PrivateCluster,
    /// The shared lock on `.in-use`; `None` once ended.
    users: Option<File>,
    started: bool,
}

impl ClusterUse {
    pub fn cluster(&self) -> &PrivateCluster {
        &self.cluster
    }

    /// Whether this process started the cluster (rather than finding it running).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Ends this process's use; stops the cluster if no other process uses it. Returns
    /// whether it stopped it.
    pub fn end(mut self) -> Result<bool, ClusterError> {
        self.end_now()
    }

    /// Ends this process's use and leaves the cluster running, whoever else uses it (the test
    /// harness shares one cluster between test processes).
    pub fn keep_running(mut self) {
        self.users = None;
    }

    fn end_now(&mut self) -> Result<bool, ClusterError> {
        let Some(users) = self.users.take() else { return Ok(false) };
        let lock = self.cluster.lock()?;
        let in_use = self.cluster.root.join(".in-use");
        users.unlock().map_err(|e| io_err("unlock", &in_use, e))?;
        let last = match users.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => false,
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &in_use, e)),
        };
        let stopped = if last && self.cluster.is_running() {
            self.cluster.stop()?;
            true
        } else {
            false
        };
        // Release the exclusive lock before the start/stop lock: a process waiting to start
        // then finds the cluster free.
        drop(users);
        drop(lock);
        Ok(stopped)
    }
}

impl Drop for ClusterUse {
    fn drop(&mut self) {
        if self.users.is_some() {
            match self.end_now() {
                Ok(true) => tracing::info!("stopped the private PostgreSQL cluster"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not stop the private PostgreSQL cluster"),
            }
        }
    }
}

/// Whether `dir` holds only what an unsuccessful start leaves (lock files, empty run and log
/// directories, a data directory without a cluster).
fn is_leftover(dir: &Path) -> bool {
    if dir.join("data").join("PG_VERSION").exists() {
        return false;
    }
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().all(|e| matches!(e.file_name().to_str(), Some(".lock" | ".in-use" | "run" | "log" | "data")))
    })
}

/// Where a cluster whose data directory the postgres user can't reach is kept.
fn relocated_root(data_dir: &Path) -> PathBuf {
    let digest = crate::crypto::sha256_hex(data_dir.as_os_str().as_encoded_bytes());
    Path::new(RELOCATED_BASE).join(&digest[..16])
}

/// Whether `user` can reach `dir` (search it and every directory above it). Asked of the
/// system as that user, so ACLs and group memberships count.
fn reachable_by(user: &str, dir: &Path) -> bool {
    let Some(runuser) = runuser() else { return true };
    Command::new(runuser)
        .args(["-u", user, "--", "test", "-x"])
        .arg(dir)
        .current_dir("/")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn runuser() -> Option<&'static str> {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].into_iter().find(|p| Path::new(p).exists())
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

/// Whether a process runs (exists and is not a zombie waiting for its parent), from `/proc`.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}
