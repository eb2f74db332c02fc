//! Errors of the results store.

/// Everything that can go wrong in the results store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or reached; `url` has its password redacted.
    #[error("cannot open results database {url}: {reason}")]
    Connect {
        /// The database URL, password replaced by `***`.
        url: String,
        /// Why, in one line.
        reason: String,
    },
    /// The URL names no supported backend.
    #[error(
        "unsupported results database URL {url}: expected sqlite://PATH, a file path or postgres://..."
    )]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },
    /// Applying the schema migrations failed.
    #[error("cannot migrate results database {url}: {source}")]
    Migrate {
        /// The database URL, password redacted.
        url: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("results database error: {0}")]
    Database(#[from] sqlx::Error),
    /// No run has this id.
    #[error("no run with id {0}")]
    UnknownRun(i64),
    /// No study has this id.
    #[error("no study with id {0}")]
    UnknownStudy(i64),
    /// No alert has this id.
    #[error("no alert with id {0}")]
    UnknownAlert(i64),
    /// No trial has this id.
    #[error("no trial with id {0}")]
    UnknownTrial(i64),
    /// `create_study` was given a name that another study already has.
    #[error("a study named {name:?} already exists (id {id}); open it to resume it")]
    StudyExists {
        /// The name.
        name: String,
        /// The existing study.
        id: i64,
    },
    /// A trial can only be finished while `running`: this one is pending (requeued), already
    /// finished, or was never claimed.
    #[error("trial {id} (number {number} of study {study}) is {status}, not running")]
    TrialNotRunning {
        /// The trial.
        id: i64,
        /// Its study.
        study: i64,
        /// Its number in the study.
        number: i64,
        /// Its current status.
        status: String,
    },
    /// A worker tried to finish a trial that is running on behalf of another worker (it was
    /// requeued and claimed again after this worker was presumed dead).
    #[error(
        "trial {id} (number {number} of study {study}) is claimed by {}, not by worker {worker:?}",
        holder(.held_by)
    )]
    TrialClaimedElsewhere {
        /// The trial.
        id: i64,
        /// Its study.
        study: i64,
        /// Its number in the study.
        number: i64,
        /// The worker that tried to finish it.
        worker: String,
        /// The worker holding it, if any.
        held_by: Option<String>,
    },
    /// Enqueueing kept losing the race for the next trial number to concurrent enqueuers.
    #[error("study {study}: no free trial number after {attempts} attempts (concurrent enqueuers)")]
    TrialNumberContention {
        /// The study.
        study: i64,
        /// How many numbers were tried.
        attempts: u32,
    },
    /// The run is no longer `running`, so nothing more can be recorded into it.
    #[error("run {id} is {status}, not running")]
    RunNotRunning {
        /// The run.
        id: i64,
        /// Its current status.
        status: String,
    },
    /// A run with this idempotency key is still `running`.
    #[error("run {id} with idempotency key {key:?} is still running")]
    RunInProgress {
        /// The running run.
        id: i64,
        /// The key.
        key: String,
    },
    /// A value given to the store is not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field (for a metric value, the measure name is included).
        field: String,
        /// Why.
        reason: String,
    },
    /// A measure was recorded before with another unit, family or direction.
    #[error("measure {name:?} is stored as {stored}, but was given as {given}")]
    MeasureMismatch {
        /// The measure.
        name: String,
        /// Its stored unit/family/direction.
        stored: String,
        /// The one given now.
        given: String,
    },
    /// A stored document (JSON column, samples blob) cannot be read back.
    #[error("corrupt {what} in the results database: {reason}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// Why.
        reason: String,
    },
    /// A JSON-lines import line is malformed.
    #[error("import line {line}: {reason}")]
    Import {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// Reading or writing a JSON-lines stream failed.
    #[error("export/import I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Who holds a claimed trial, for messages.
fn holder(worker: &Option<String>) -> String {
    match worker {
        Some(w) => format!("worker {w:?}"),
        None => "no worker".to_string(),
    }
}

/// `Result` with a [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The URL with any password (`user:PASSWORD@` or `password=...`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end =
            out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                let end = rest_start + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}
