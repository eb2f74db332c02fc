//! What a load test measures: the built-in engine behind a real loopback HTTP port, the null
//! server, or any OpenAI-compatible URL.

use crate::client::{TargetSpec, api_url};
use crate::null_server::{NullServer, NullServerConfig, NullServerHandle};
use dyno_engine::config::EngineConfig;
use dyno_engine::engine::EngineHandle;
use dyno_engine::model_config::ModelConfig;
use dyno_engine::server::ServerThread;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A target to start (or, for a URL, to find).
#[derive(Debug, Clone)]
pub enum Target {
    /// The reference engine in this process, served on `127.0.0.1` (a free port).
    Builtin {
        /// The model to run.
        model: ModelConfig,
        /// Its engine config (validated against the model when the target starts).
        config: Box<EngineConfig>,
        /// Safetensors checkpoint directory; random weights from `config.seed` when `None`.
        checkpoint: Option<PathBuf>,
    },
    /// An OpenAI-compatible server that is already running.
    Url {
        /// Its base URL.
        base_url: String,
        /// The model name to send; asked of `GET /v1/models` when `None`.
        model: Option<String>,
        /// Send prompts as token-id arrays instead of text.
        token_prompts: bool,
    },
    /// The null server on a thread of its own: tokens at a configured TTFT and ITL, no model;
    /// measures the load generator itself.
    Null(NullServerConfig),
}

/// A started target: where to send requests. Dropping it stops what it started.
#[derive(Debug)]
pub struct RunningTarget {
    /// How to reach it.
    pub spec: TargetSpec,
    /// A one-line description for reports.
    pub description: String,
    /// Keeps a built-in server alive.
    _server: Option<ServerThread>,
    /// Keeps a null server alive.
    _null: Option<NullServerHandle>,
}

/// A target that could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The engine refused its config or weights.
    #[error(transparent)]
    Engine(#[from] dyno_engine::EngineError),
    /// Binding or serving failed.
    #[error("starting the built-in server: {0}")]
    Io(#[from] std::io::Error),
    /// The null server did not start.
    #[error(transparent)]
    Null(#[from] crate::null_server::NullServerError),
    /// A URL target that could not be asked for its models.
    #[error("{url}: {reason}")]
    Url {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl Target {
    /// Starts the target (a URL is only resolved: its model name, if not given).
    pub async fn start(&self) -> Result<RunningTarget, TargetError> {
        match self {
            Target::Builtin { model, config, checkpoint } => {
                let (model, config, checkpoint) =
                    (model.clone(), config.clone(), checkpoint.clone());
                // Loading weights takes seconds: keep it off the async runtime's threads.
                let started = tokio::task::spawn_blocking(move || {
                    let (handle, model) =
                        EngineHandle::start_with_weights(&model, &config, checkpoint.as_deref())?;
                    let backend: Arc<dyn dyno_engine::api::Backend> = Arc::new(handle);
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                    let server = ServerThread::start(backend, addr, 2, Duration::from_secs(5))?;
                    let description = format!(
                        "built-in engine: {} ({}), {} threads",
                        model.name,
                        config.weight_format(),
                        config.threads
                    );
                    Ok::<_, TargetError>((server, model.name, description))
                })
                .await
                .map_err(|e| std::io::Error::other(format!("engine start-up panicked: {e}")))??;
                let (server, name, description) = started;
                let spec = TargetSpec {
                    base_url: format!("http://{}", server.addr()),
                    model: name,
                    token_prompts: true,
                };
                Ok(RunningTarget { spec, description, _server: Some(server), _null: None })
            }
            Target::Url { base_url, model, token_prompts } => {
                let model = match model {
                    Some(m) => m.clone(),
                    None => first_model(base_url).await?,
                };
                Ok(RunningTarget {
                    description: format!("{base_url} (model {model})"),
                    spec: TargetSpec {
                        base_url: base_url.clone(),
                        model,
                        token_prompts: *token_prompts,
                    },
                    _server: None,
                    _null: None,
                })
            }
            Target::Null(config) => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                let handle = NullServer::run_on_own_thread(config.clone(), addr)?;
                Ok(RunningTarget {
                    description: format!(
                        "null server (TTFT {} ms, ITL {} ms) on {}",
                        config.ttft_ms,
                        config.itl_ms,
                        handle.local_addr()
                    ),
                    spec: TargetSpec {
                        base_url: handle.base_url(),
                        model: config.model.clone(),
                        token_prompts: true,
                    },
                    _server: None,
                    _null: Some(handle),
                })
            }
        }
    }
}

/// The first model id of `GET {base}/v1/models`.
async fn first_model(base_url: &str) -> Result<String, TargetError> {
    let url = api_url(base_url, "models");
    let err = |reason: String| TargetError::Url { url: url.clone(), reason };
    let response = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| err(format!("cannot list models ({e}); pass --model")))?;
    if !response.status().is_success() {
        return Err(err(format!("listing models answered {}; pass --model", response.status())));
    }
    let body: serde_json::Value =
        response.json().await.map_err(|e| err(format!("models list is not JSON: {e}")))?;
    body.pointer("/data/0/id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| err("the models list is empty; pass --model".into()))
}
