//! The simplest executors: `noop`, `fail` (for tests and placeholders) and `wait`.

use shoal_core::taskflow::duration;

use super::{ExecContext, ExecError, Executor, Outcome};

/// Succeeds at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop;

#[async_trait::async_trait]
impl Executor for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, _ctx: ExecContext) -> Result<Outcome, ExecError> {
        Ok(Outcome::default())
    }
}

/// Fails at once, with the `message` parameter (for tests and failure paths).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fail;

#[async_trait::async_trait]
impl Executor for Fail {
    fn name(&self) -> &str {
        "fail"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let message = ctx.optional_param("message").unwrap_or("failed as asked");
        Err(ExecError::Failed(message.to_string()))
    }
}

/// Waits for the `duration` parameter (`200ms`, `5m`, …) on the process clock, counted
/// from when the attempt started, so a re-run after a restart waits only what is left.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wait;

#[async_trait::async_trait]
impl Executor for Wait {
    fn name(&self) -> &str {
        "wait"
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, ctx: ExecContext) -> Result<Outcome, ExecError> {
        let text = ctx.string_param("duration")?;
        let d = duration::parse(text).map_err(|e| ExecError::Param {
            name: "duration".into(),
            problem: format!("{text:?} is not a duration: {e}"),
        })?;
        let deadline = ctx.started_at.saturating_add(d).unwrap_or(ctx.started_at);
        ctx.clock.sleep_until(deadline).await;
        Ok(Outcome {
            results: vec![],
            message: Some(format!("waited {text}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::testing::mk_ctx;
    use super::*;

    #[tokio::test]
    async fn fail_reports_the_message_param() {
        let err = Fail.run(mk_ctx(&[("message", "boom")])).await.unwrap_err();
        assert_eq!(err.report(), "boom");
    }

    #[tokio::test]
    async fn wait_counts_from_the_start_of_the_attempt() {
        let mut ctx = mk_ctx(&[("duration", "10s")]);
        ctx.started_at = ctx.clock.now() - jiff::SignedDuration::from_secs(10);
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), Wait.run(ctx))
            .await
            .expect("wait restarted its full duration")
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        let err = Wait.run(mk_ctx(&[("duration", "soon")])).await.unwrap_err();
        assert!(err.report().contains("not a duration"), "{}", err.report());
    }
}
