//! Recording a whole run at once, for commands that measure first and store after
//! (`dyno load`, `dyno kernels bench`, `dyno ingest criterion`).

use super::{BeginRun, Result, RunInfo, RunStatus, ScenarioResult, Store};

impl Store {
    /// Record a finished measurement as one completed run: begin it, record each scenario (each
    /// in its own transaction), finish it. When a scenario fails to record, the run is marked
    /// failed (so none of it reaches a series) and the error returned. A completed run with
    /// the same idempotency key means nothing is written: [`BeginRun::AlreadyRecorded`].
    pub async fn record_run(
        &self,
        info: &RunInfo,
        scenarios: &[ScenarioResult],
    ) -> Result<BeginRun> {
        let run = match self.begin_run(info).await? {
            BeginRun::Started(id) => id,
            recorded @ BeginRun::AlreadyRecorded(_) => return Ok(recorded),
        };
        for s in scenarios {
            if let Err(e) =
                self.record_scenario_result(run, &s.scenario, &s.values, &s.histograms).await
            {
                // The recording error is the one worth reporting; a failure to mark the run
                // failed leaves it `running`, which `mark_stale_runs_failed` settles later.
                let _ = self.finish_run(run, RunStatus::Failed).await;
                return Err(e);
            }
        }
        self.finish_run(run, RunStatus::Completed).await?;
        Ok(BeginRun::Started(run))
    }
}
