//! Slow work on background threads. A [`Task`] runs one closure on its own thread; the closure
//! reports progress through a [`Reporter`], which wakes the UI, and the UI polls for the result
//! once per frame. The UI thread never waits on a task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

enum Message<P, T> {
    Progress(P),
    Done(T),
    /// The work panicked: a bug, reported to the user instead of a spinner that never stops.
    Lost(String),
}

/// Handed to the task's closure: reports progress and tells it when it was cancelled.
pub struct Reporter<P, T> {
    tx: Sender<Message<P, T>>,
    ctx: egui::Context,
    cancel: Arc<AtomicBool>,
}

impl<P, T> Reporter<P, T> {
    pub fn progress(&self, p: P) {
        let _ = self.tx.send(Message::Progress(p));
        self.ctx.request_repaint();
    }

    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// Background work whose failure is a message for the user, reporting progress `P`.
pub type Job<T, P = ()> = Task<P, Result<T, String>>;

pub struct Task<P, T> {
    rx: Receiver<Message<P, T>>,
    cancel: Arc<AtomicBool>,
    started: Instant,
    /// The latest progress reported.
    pub progress: Option<P>,
}

impl<P: Send + 'static, T: Send + 'static> Task<P, T> {
    pub fn spawn(
        ctx: &egui::Context,
        name: &str,
        work: impl FnOnce(&Reporter<P, T>) -> T + Send + 'static,
    ) -> Self {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let reporter = Reporter {
            tx,
            ctx: ctx.clone(),
            cancel: cancel.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("earshot-{name}"))
            .spawn(move || {
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&reporter)));
                let message = match result {
                    Ok(done) => Message::Done(done),
                    Err(panic) => Message::Lost(panic_text(panic.as_ref())),
                };
                let _ = reporter.tx.send(message);
                reporter.ctx.request_repaint();
            });
        // Without a thread the sender is dropped at once and `poll` reports it.
        drop(spawned);
        Self {
            rx,
            cancel,
            started: Instant::now(),
            progress: None,
        }
    }
}

impl<P, T> Task<P, T> {
    /// The result once the task is done (once), or why it was lost; keeps the latest progress
    /// meanwhile.
    pub fn poll(&mut self) -> Option<Result<T, String>> {
        loop {
            match self.rx.try_recv() {
                Ok(Message::Progress(p)) => self.progress = Some(p),
                Ok(Message::Done(t)) => return Some(Ok(t)),
                Ok(Message::Lost(why)) => return Some(Err(why)),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    return Some(Err("the background thread could not start".into()));
                }
            }
        }
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Polls an optional task: its result (or why it was lost) once it ended, emptying the slot.
pub fn finished<P, T>(slot: &mut Option<Task<P, T>>) -> Option<Result<T, String>> {
    let result = slot.as_mut()?.poll();
    if result.is_some() {
        *slot = None;
    }
    result
}

/// [`finished`] for tasks that return a `Result` with a message: one `Result` either way.
pub fn finished_flat<P, T>(
    slot: &mut Option<Task<P, Result<T, String>>>,
) -> Option<Result<T, String>> {
    finished(slot).map(|r| r.and_then(|inner| inner))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("a background task failed ({text}); please report this as a bug")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait<P, T>(task: &mut Task<P, T>) -> Result<T, String> {
        loop {
            if let Some(result) = task.poll() {
                return result;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_task_reports_progress_then_its_result() {
        let ctx = egui::Context::default();
        let mut task = Task::spawn(&ctx, "test", |r: &Reporter<u32, u32>| {
            r.progress(7);
            42
        });
        assert_eq!(wait(&mut task), Ok(42));
        assert_eq!(task.progress, Some(7));
    }

    #[test]
    fn a_panicking_task_is_reported_lost_not_left_running() {
        let ctx = egui::Context::default();
        let mut task: Task<(), u32> = Task::spawn(&ctx, "test", |_| panic!("boom"));
        let lost = wait(&mut task).unwrap_err();
        assert!(lost.contains("boom"), "{lost}");
    }
}
