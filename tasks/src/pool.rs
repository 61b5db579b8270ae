//! The one work queue every parallel job shares (the report's trainings, the
//! claw evaluation's rows, the arm's and Push-T's episodes): a few threads
//! take jobs most costly first, each with its own state (a loaded policy),
//! and the results come back in job order, so a result never depends on
//! which worker ran it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A job that never ran although none failed (a worker died): names the job.
#[derive(Debug, thiserror::Error)]
#[error("job {0} did not run")]
pub struct Unrun(pub usize);

/// The cores this process may use (1 if unknown).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run jobs `0..costs.len()` on `workers` threads, the highest `costs`
/// first, so that the workers finish together; returns the results in job
/// order. After a job fails no further job starts, and the first failure
/// (in job order) is returned.
pub fn longest_first<T: Send, E: Send + From<Unrun>>(
    costs: &[f64],
    workers: usize,
    run: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    longest_first_with(costs, workers, || Ok(()), |(), j| run(j))
}

/// As [`longest_first`], with per-worker state: each worker calls `init`
/// once (before its first job; a worker that gets no job may not call it)
/// and hands the state to every job it runs. An `init` failure counts as the
/// failure of the job the worker was about to run.
pub fn longest_first_with<S, T: Send, E: Send + From<Unrun>>(
    costs: &[f64],
    workers: usize,
    init: impl Fn() -> Result<S, E> + Sync,
    run: impl Fn(&mut S, usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]));
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<T, E>>>> = costs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, costs.len().max(1)) {
            scope.spawn(|| {
                let mut state = None;
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&j) = order.get(k) else { break };
                    let r = match &mut state {
                        Some(s) => run(s, j),
                        None => init().and_then(|s| run(state.insert(s), j)),
                    };
                    let failed = r.is_err();
                    *slots[j].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    if failed {
                        next.store(order.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let done: Vec<Option<Result<T, E>>> = slots
        .into_iter()
        .map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    // The first failure in job order; else every result, in job order.
    let mut out = Vec::with_capacity(done.len());
    let mut unrun = None;
    for (j, d) in done.into_iter().enumerate() {
        match d {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => unrun = unrun.or(Some(j)),
        }
    }
    match unrun {
        Some(j) => Err(Unrun(j).into()),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskError;

    #[test]
    fn results_come_back_in_job_order_and_the_costliest_start_first() {
        let started = Mutex::new(Vec::new());
        let costs = [1.0, 5.0, 3.0, 0.5];
        let out = longest_first(&costs, 1, |j| -> Result<usize, TaskError> {
            started.lock().expect("lock").push(j);
            Ok(j * 10)
        })
        .expect("all run");
        assert_eq!(out, [0, 10, 20, 30]);
        assert_eq!(*started.lock().expect("lock"), [1, 2, 0, 3]);
        let two = longest_first(&costs, 2, |j| Ok::<_, TaskError>(j * 10)).expect("all run");
        assert_eq!(two, out);
    }

    #[test]
    fn each_worker_initialises_its_state_once() {
        let inits = AtomicUsize::new(0);
        let out = longest_first_with(
            &[1.0; 12],
            3,
            || Ok(inits.fetch_add(1, Ordering::SeqCst) * 100),
            |state, j| {
                *state += 1;
                Ok::<_, TaskError>(j)
            },
        )
        .expect("all run");
        assert_eq!(out, (0..12).collect::<Vec<_>>());
        let n = inits.load(Ordering::SeqCst);
        assert!((1..=3).contains(&n), "{n} inits for 3 workers");
        let e = longest_first_with(
            &[1.0, 1.0],
            1,
            || Err::<(), _>(TaskError::invalid("no policy")),
            |_, j| Ok(j),
        )
        .expect_err("init failed");
        assert_eq!(e.to_string(), "no policy");
    }

    #[test]
    fn the_first_failure_is_returned_and_stops_new_jobs() {
        let ran = AtomicUsize::new(0);
        let e = longest_first(&[4.0, 3.0, 2.0, 1.0], 1, |j| {
            ran.fetch_add(1, Ordering::SeqCst);
            if j == 1 {
                Err(TaskError::invalid("job 1 broke"))
            } else {
                Ok(())
            }
        })
        .expect_err("a job failed");
        assert_eq!(e.to_string(), "job 1 broke");
        assert_eq!(
            ran.load(Ordering::SeqCst),
            2,
            "no job starts after the failure"
        );
    }
}
