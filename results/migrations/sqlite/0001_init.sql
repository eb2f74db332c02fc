-- dyno results store, schema version 1 (SQLite dialect).
-- migrations/postgres/ holds the same history in PostgreSQL's dialect; the two differ only in
-- the id column type (INTEGER PRIMARY KEY here, an identity column there) and BLOB vs BYTEA.
-- tests/store.rs checks that both directories hold the same files, tables and columns.
-- Times are unix milliseconds (BIGINT); JSON documents are TEXT.

CREATE TABLE testbeds (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE commits (
    id INTEGER PRIMARY KEY,
    sha TEXT NOT NULL UNIQUE,
    branch TEXT NOT NULL,
    committed_at BIGINT,
    ordinal BIGINT NOT NULL
);
CREATE INDEX commits_ordinal ON commits (ordinal);

CREATE TABLE scenarios (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    workload TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    UNIQUE (name, model, workload, config_hash)
);

CREATE TABLE measures (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    unit TEXT NOT NULL,
    family TEXT NOT NULL,
    lower_is_better BOOLEAN NOT NULL
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    commit_id BIGINT NOT NULL REFERENCES commits (id),
    branch TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    environment TEXT NOT NULL,
    testbed_id BIGINT NOT NULL REFERENCES testbeds (id),
    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'partial')),
    idempotency_key TEXT NOT NULL UNIQUE,
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX runs_status ON runs (status, started_at);
CREATE INDEX runs_commit ON runs (commit_id);

CREATE TABLE metric_values (
    id INTEGER PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    scenario_id BIGINT NOT NULL REFERENCES scenarios (id),
    measure_id BIGINT NOT NULL REFERENCES measures (id),
    testbed_id BIGINT NOT NULL REFERENCES testbeds (id),
    value DOUBLE PRECISION NOT NULL,
    lower_bound DOUBLE PRECISION,
    upper_bound DOUBLE PRECISION,
    n BIGINT NOT NULL,
    UNIQUE (run_id, scenario_id, measure_id)
);
CREATE INDEX metric_values_series ON metric_values (scenario_id, measure_id, testbed_id, run_id);

-- Raw samples: `data` is the samples as consecutive little-endian IEEE-754 f64 (8 bytes each).
CREATE TABLE raw_samples (
    metric_value_id BIGINT PRIMARY KEY REFERENCES metric_values (id) ON DELETE CASCADE,
    encoding TEXT NOT NULL,
    data BLOB NOT NULL
);

-- Latency histograms, serialized by the harness (HDR V2, optionally deflated).
CREATE TABLE histograms (
    id INTEGER PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    scenario_id BIGINT NOT NULL REFERENCES scenarios (id),
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (run_id, scenario_id, name)
);

CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    scenario_id BIGINT REFERENCES scenarios (id),
    objective TEXT NOT NULL,
    search_space TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE TABLE trials (
    id INTEGER PRIMARY KEY,
    study_id BIGINT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    config TEXT NOT NULL,
    predicted TEXT,
    measured TEXT,
    status TEXT NOT NULL,
    error TEXT,
    run_id BIGINT REFERENCES runs (id),
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (study_id, number)
);

CREATE TABLE alert_groups (
    id INTEGER PRIMARY KEY,
    first_commit_id BIGINT NOT NULL REFERENCES commits (id),
    last_commit_id BIGINT NOT NULL REFERENCES commits (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    group_id BIGINT REFERENCES alert_groups (id),
    scenario_id BIGINT NOT NULL REFERENCES scenarios (id),
    measure_id BIGINT NOT NULL REFERENCES measures (id),
    testbed_id BIGINT NOT NULL REFERENCES testbeds (id),
    branch TEXT NOT NULL,
    commit_id BIGINT NOT NULL REFERENCES commits (id),
    state TEXT NOT NULL CHECK (state IN ('provisional', 'confirmed', 'retracted')),
    direction TEXT NOT NULL,
    before_value DOUBLE PRECISION NOT NULL,
    after_value DOUBLE PRECISION NOT NULL,
    change_pct DOUBLE PRECISION NOT NULL,
    p_value DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (scenario_id, measure_id, testbed_id, branch, commit_id)
);
CREATE INDEX alerts_series ON alerts (scenario_id, measure_id, testbed_id, branch);

CREATE TABLE triage_events (
    id INTEGER PRIMARY KEY,
    alert_id BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    note TEXT NOT NULL,
    author TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    commit_id BIGINT REFERENCES commits (id),
    run_id BIGINT REFERENCES runs (id) ON DELETE CASCADE,
    scenario_id BIGINT REFERENCES scenarios (id),
    measure_id BIGINT REFERENCES measures (id),
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
