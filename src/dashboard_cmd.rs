//! `dyno dashboard`: parse, open the store, bind, serve (dyno-dashboard does the rest).

use anyhow::{Context, Result};
use clap::Args;

use crate::record_args::{DbArgs, block_on};

/// Arguments of `dyno dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on (port 0 picks a free one; the startup line says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Token that triage needs (bearer header for the API, the form's token field in the
    /// browser). Without one the dashboard is read-only.
    #[arg(long, env = "DYNO_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Serves the dashboard until interrupted.
pub fn run_dashboard(a: DashboardArgs) -> Result<()> {
    block_on(async move {
        let store = a.db.open().await?;
        let listener = tokio::net::TcpListener::bind(&a.bind)
            .await
            .with_context(|| format!("--bind {}: cannot listen there", a.bind))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let mode = if a.token.as_deref().is_some_and(|t| !t.is_empty()) {
            "triage enabled"
        } else {
            "read-only: no --token"
        };
        eprintln!("dyno dashboard: listening on http://{addr} ({}, {mode})", a.db.shown());
        dyno_dashboard::serve(listener, store, a.token).await.context("serving the dashboard")
    })?
}
