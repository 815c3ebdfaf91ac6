//! payhook's receiver and worker as real processes (so that `kill -9` is real), each
//! configured by a generated TOML file (`PAYHOOK_CONFIG`).
//!
//! Two ways to get the processes: the built binaries (`payhook-receiver`,
//! `payhook-worker` from a directory, what `scripts/chaos` does), or this crate's own
//! binary started again with a hidden sub-command ([`Launcher::SelfExec`]) that runs
//! exactly what those binaries' `main` runs. The second needs no other package's build
//! and is what the CI test uses (`payhook_testkit::bins`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The hidden sub-commands of `payhook-chaos` that run a component in this process.
pub const RUN_RECEIVER: &str = "__run-receiver";
pub const RUN_WORKER: &str = "__run-worker";

/// How receiver and worker processes are started.
#[derive(Debug, Clone)]
pub enum Launcher {
    /// `<dir>/payhook-receiver`, `<dir>/payhook-worker`.
    Binaries(PathBuf),
    /// `<exe> __run-receiver`, `<exe> __run-worker` (see [`run_component`]).
    SelfExec(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Receiver,
    Worker,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Self::Receiver => "receiver",
            Self::Worker => "worker",
        }
    }
}

impl Launcher {
    fn command(&self, component: Component) -> Command {
        match self {
            Self::Binaries(dir) => Command::new(dir.join(match component {
                Component::Receiver => "payhook-receiver",
                Component::Worker => "payhook-worker",
            })),
            Self::SelfExec(exe) => {
                let mut c = Command::new(exe);
                c.arg(match component {
                    Component::Receiver => RUN_RECEIVER,
                    Component::Worker => RUN_WORKER,
                });
                c
            }
        }
    }

    /// Checks the programs exist.
    pub fn check(&self) -> anyhow::Result<()> {
        let paths: Vec<PathBuf> = match self {
            Self::Binaries(dir) => vec![dir.join("payhook-receiver"), dir.join("payhook-worker")],
            Self::SelfExec(exe) => vec![exe.clone()],
        };
        for p in paths {
            if !p.exists() {
                bail!("{} does not exist (build it first)", p.display());
            }
        }
        Ok(())
    }
}

/// What `payhook-receiver` / `payhook-worker` run, for [`Launcher::SelfExec`].
pub async fn run_component(component: Component) -> anyhow::Result<()> {
    use payhook_shared::config::Settings;
    use tokio_util::sync::CancellationToken;
    let settings = Settings::load()?;
    payhook_shared::telemetry::init(settings.log.format, &settings.log.filter);
    let shutdown = CancellationToken::new();
    tokio::spawn(payhook_shared::telemetry::on_shutdown_signal(
        shutdown.clone(),
    ));
    match component {
        Component::Receiver => {
            let app = payhook_receiver::Application::build(
                &settings,
                std::sync::Arc::new(payhook_shared::clock::SystemClock),
            )?;
            app.run_until_stopped(shutdown).await?;
        }
        Component::Worker => {
            let worker = payhook_worker::Worker::build(&settings).await?;
            worker.run_until_stopped(shutdown).await?;
        }
    }
    Ok(())
}

/// One component's process, restartable; killed (SIGKILL) on `Drop`.
#[derive(Debug)]
pub struct PayhookProcess {
    component: Component,
    launcher: Launcher,
    config: PathBuf,
    log: PathBuf,
    /// `/readyz` of this process.
    ready_url: String,
    child: Option<Child>,
    pub starts: u32,
    pub kills: u32,
}

impl PayhookProcess {
    /// Starts the component with `config` (logs appended to `log`) and waits until
    /// its `/readyz` answers 200 (bounded).
    pub async fn start(
        component: Component,
        launcher: &Launcher,
        config: &Path,
        log: &Path,
        ready_url: String,
    ) -> anyhow::Result<Self> {
        let mut p = Self {
            component,
            launcher: launcher.clone(),
            config: config.to_owned(),
            log: log.to_owned(),
            ready_url,
            child: None,
            starts: 0,
            kills: 0,
        };
        p.spawn()?;
        p.wait_ready(Duration::from_secs(60)).await?;
        Ok(p)
    }

    /// Starts the process (not waiting for readiness).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} already running", self.component.name());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = self
            .launcher
            .command(self.component)
            .env("PAYHOOK_CONFIG", &self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {}", self.component.name()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Waits until `/readyz` answers 200; fails early if the process exited.
    pub async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "the {} exited ({status}) before it was ready; see {}",
                    self.component.name(),
                    self.log.display()
                );
            }
            let ready = client
                .get(&self.ready_url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {} was not ready within {within:?}; see {}",
                    self.component.name(),
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
            self.kills += 1;
        }
    }

    /// SIGTERM (graceful drain), bounded; SIGKILL after `within`.
    pub fn terminate(&mut self, within: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn component(&self) -> Component {
        self.component
    }

    /// Whether the process is still running (not exited on its own).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for PayhookProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
