//! Private server instances for the scenarios that stop and restart a service: a
//! Redis, a PostgreSQL cluster and a RabbitMQ node of their own, on free ports, in a
//! temporary directory. The shared servers on the standard ports are never touched.
//! Every instance is stopped and its directory removed on `Drop` (also on panic).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use payhook_testkit::pki::TestPki;

/// A port nobody listens on right now (bound then released: a small race, fine for
/// one machine's tests).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn wait_port(port: u16, open: bool, within: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while port_open(port) != open {
        if Instant::now() >= deadline {
            bail!(
                "{what} did not {} port {port} within {within:?}",
                if open { "open" } else { "close" }
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A fresh temporary directory `…/payhook-chaos-<what>-<random>`.
pub fn temp_dir(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "payhook-chaos-{what}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Hands `dir` to `user` when running as root (servers that refuse root).
fn give_to(dir: &Path, user: &str) -> anyhow::Result<()> {
    if is_root() {
        run(Command::new("chown").arg("-R").arg(user).arg(dir), "chown")?;
    }
    Ok(())
}

/// Runs `program` as `user` when root (initdb and postgres refuse root).
fn as_user(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(user).arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

// ---------------------------------------------------------------------------------
// Redis

/// A private `redis-server` (no persistence).
#[derive(Debug)]
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    /// TLS only (`--port 0 --tls-port`): the arguments for it.
    tls: Option<Vec<String>>,
}

impl PrivateRedis {
    pub fn start() -> anyhow::Result<Self> {
        let dir = temp_dir("redis")?;
        let redis = Self {
            port: free_port()?,
            dir,
            tls: None,
        };
        redis.up()?;
        Ok(redis)
    }

    /// A Redis that speaks TLS only, with `pki`'s server certificate; with
    /// `require_client_cert`, clients must present a certificate the CA signed.
    pub fn start_tls(pki: &TestPki, require_client_cert: bool) -> anyhow::Result<Self> {
        let dir = temp_dir("redis-tls")?;
        let files = pki.write_server_files(&dir)?;
        let path = |p: &Path| p.display().to_string();
        let redis = Self {
            port: free_port()?,
            tls: Some(vec![
                "--tls-cert-file".into(),
                path(&files.cert),
                "--tls-key-file".into(),
                path(&files.key),
                "--tls-ca-cert-file".into(),
                path(&files.ca),
                "--tls-auth-clients".into(),
                if require_client_cert { "yes" } else { "no" }.into(),
            ]),
            dir,
        };
        redis.up()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://localhost:<port>` for a TLS one (the
    /// name its certificate gives).
    pub fn url(&self) -> String {
        if self.tls.is_some() {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    /// Starts (again) on the same port.
    pub fn up(&self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        // `-::1`: IPv6 loopback when the machine has it (`localhost` may resolve there).
        command.args(["--bind", "127.0.0.1", "-::1"]);
        match &self.tls {
            None => command.arg("--port").arg(self.port.to_string()),
            Some(tls) => command
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .args(tls),
        };
        run(
            command
                .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
                .arg("--pidfile")
                .arg(self.pidfile())
                .arg("--dir")
                .arg(&self.dir)
                .arg("--logfile")
                .arg(self.dir.join("redis.log")),
            "redis-server",
        )?;
        wait_port(self.port, true, Duration::from_secs(10), "redis")
    }

    /// kill -9: a crash, every key lost (no persistence).
    pub fn crash(&self) -> anyhow::Result<()> {
        if let Ok(pid) = std::fs::read_to_string(self.pidfile()) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_file(self.pidfile());
        wait_port(self.port, false, Duration::from_secs(10), "redis")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL

/// A private PostgreSQL cluster (`initdb`, trust authentication on 127.0.0.1).
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Server options for TLS (`-c ssl=on …`), empty for a plain cluster.
    tls_options: String,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let dir = temp_dir("postgres")?;
        let pg = Self {
            port: free_port()?,
            dir,
            bin,
            tls_options: String::new(),
        };
        pg.init()?;
        pg.up()?;
        Ok(pg)
    }

    /// A cluster that accepts TLS connections only (`hostssl` lines, no `host`), with
    /// `pki`'s server certificate; with `require_client_cert`, a client certificate the
    /// CA signed is required too (`clientcert=verify-ca`).
    pub fn start_tls(pki: &TestPki, require_client_cert: bool) -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let dir = temp_dir("postgres-tls")?;
        let files = pki.write_server_files(&dir)?;
        let pg = Self {
            port: free_port()?,
            tls_options: format!(
                " -c listen_addresses=localhost -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c ssl_ca_file={}",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            ),
            dir,
            bin,
        };
        pg.init()?;
        let client = if require_client_cert {
            " clientcert=verify-ca"
        } else {
            ""
        };
        std::fs::write(
            pg.dir.join("data/pg_hba.conf"),
            format!(
                "local all all trust\nhostssl all all 127.0.0.1/32 trust{client}\nhostssl all all ::1/128 trust{client}\n"
            ),
        )?;
        give_to(&pg.dir, "postgres")?;
        pg.up()?;
        Ok(pg)
    }

    fn init(&self) -> anyhow::Result<()> {
        let pg = self;
        give_to(&pg.dir, "postgres")?;
        run(
            as_user("postgres", &pg.bin.join("initdb"))
                .arg("-D")
                .arg(pg.dir.join("data"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync"]),
            "initdb",
        )
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn up(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        options.push_str(&self.tls_options);
        run(
            as_user("postgres", &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-o")
                .arg(options)
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        )
    }

    /// `pg_ctl stop -m immediate`: every backend killed at once, no checkpoint (crash
    /// recovery on the next start).
    pub fn crash(&self) -> anyhow::Result<()> {
        run(
            as_user("postgres", &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        )
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.dir.join("data/postmaster.pid").exists() {
            let _ = self.crash();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) not found")?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

// ---------------------------------------------------------------------------------
// RabbitMQ

/// A private RabbitMQ node (`chaos-<random>@localhost`), plugins off (no management
/// listener), its own AMQP and distribution ports, data and logs in a temp dir.
#[derive(Debug)]
pub struct PrivateRabbit {
    pub port: u16,
    /// The AMQPS listener's port, for a node started with [`PrivateRabbit::start_tls`].
    pub tls_port: Option<u16>,
    dist_port: u16,
    pub node: String,
    dir: PathBuf,
    up: std::sync::atomic::AtomicBool,
}

impl PrivateRabbit {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// A node with an AMQPS listener besides the plain one, with `pki`'s server
    /// certificate; with `require_client_cert`, clients must present a certificate
    /// the CA signed.
    pub fn start_tls(pki: &TestPki, require_client_cert: bool) -> anyhow::Result<Self> {
        Self::start_with(Some((pki, require_client_cert)))
    }

    fn start_with(tls: Option<(&TestPki, bool)>) -> anyhow::Result<Self> {
        let dir = temp_dir("rabbitmq")?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let mut conf = String::from("loopback_users = none\n");
        let tls_port = match tls {
            None => None,
            Some((pki, require_client_cert)) => {
                let files = pki.write_server_files(&dir)?;
                let port = free_port()?;
                conf.push_str(&format!(
                    "listeners.ssl.default = {port}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = {require_client_cert}\n",
                    files.ca.display(),
                    files.cert.display(),
                    files.key.display()
                ));
                Some(port)
            }
        };
        std::fs::write(dir.join("rabbitmq.conf"), conf)?;
        let rabbit = Self {
            tls_port,
            port: free_port()?,
            dist_port: free_port()?,
            node: format!(
                "chaos-{}@localhost",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            dir,
            up: std::sync::atomic::AtomicBool::new(false),
        };
        give_to(&rabbit.dir, "rabbitmq")?;
        rabbit.up()?;
        Ok(rabbit)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `amqps://guest:guest@localhost:<tls_port>/%2f` (the name the certificate gives).
    pub fn amqps_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("amqps://guest:guest@localhost:{port}/%2f"))
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the node (again, same data directory: durable queues and persistent
    /// messages survive) and waits until it accepts AMQP sessions.
    pub fn up(&self) -> anyhow::Result<()> {
        let d = &self.dir;
        run(
            Command::new("rabbitmq-server")
                .arg("-detached")
                .current_dir(d)
                .env("RABBITMQ_NODENAME", &self.node)
                .env("RABBITMQ_NODE_PORT", self.port.to_string())
                .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
                .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", d.join("log"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
                .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
                .env("RABBITMQ_PID_FILE", d.join("pid")),
            "rabbitmq-server -detached",
        )?;
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ok = Command::new("rabbitmqctl")
                .args(["-q", "-n", &self.node, "await_startup", "--timeout", "60"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                wait_port(self.port, true, Duration::from_secs(30), "rabbitmq")?;
                if let Some(port) = self.tls_port {
                    wait_port(port, true, Duration::from_secs(30), "rabbitmq (TLS)")?;
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "RabbitMQ node {} did not start within 90 s (logs in {})",
                    self.node,
                    d.display()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `rabbitmqctl stop`: the node goes away (clients see their connections close).
    pub fn stop(&self) -> anyhow::Result<()> {
        run(
            Command::new("rabbitmqctl").args(["-q", "-n", &self.node, "stop"]),
            "rabbitmqctl stop",
        )?;
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        wait_port(self.port, false, Duration::from_secs(30), "rabbitmq")
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        // Half started or not answering: kill the node's VM by its pid file.
        if self.up.load(std::sync::atomic::Ordering::SeqCst)
            && self.stop().is_err()
            && let Ok(pid) = std::fs::read_to_string(self.dir.join("pid"))
        {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
