//! Private server instances for the scenarios that stop and restart a service: a
//! Redis, a PostgreSQL cluster and a RabbitMQ node of their own, on free ports, in a
//! temporary directory. The shared servers on the standard ports are never touched.
//! Every instance is stopped and its directory removed on `Drop` (also on panic).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

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
}

impl PrivateRedis {
    pub fn start() -> anyhow::Result<Self> {
        let dir = temp_dir("redis")?;
        let redis = Self {
            port: free_port()?,
            dir,
        };
        redis.up()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    /// Starts (again) on the same port.
    pub fn up(&self) -> anyhow::Result<()> {
        run(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port"])
                .arg(self.port.to_string())
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
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let dir = temp_dir("postgres")?;
        let pg = Self {
            port: free_port()?,
            dir,
            bin,
        };
        give_to(&pg.dir, "postgres")?;
        run(
            as_user("postgres", &pg.bin.join("initdb"))
                .arg("-D")
                .arg(pg.dir.join("data"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync"]),
            "initdb",
        )?;
        pg.up()?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn up(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
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
    dist_port: u16,
    pub node: String,
    dir: PathBuf,
    up: std::sync::atomic::AtomicBool,
}

impl PrivateRabbit {
    pub fn start() -> anyhow::Result<Self> {
        let dir = temp_dir("rabbitmq")?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(dir.join("rabbitmq.conf"), "loopback_users = none\n")?;
        let rabbit = Self {
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
                return wait_port(self.port, true, Duration::from_secs(30), "rabbitmq");
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
