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
                let result = work(&reporter);
                let _ = reporter.tx.send(Message::Done(result));
                reporter.ctx.request_repaint();
            });
        if let Err(e) = spawned {
            // Without a thread there is no task; the UI shows it as never finishing, so say so.
            eprintln!("earshot: cannot start a background thread: {e}");
        }
        Self {
            rx,
            cancel,
            started: Instant::now(),
            progress: None,
        }
    }
}

impl<P, T> Task<P, T> {
    /// The result once the task is done (once); keeps the latest progress meanwhile.
    pub fn poll(&mut self) -> Option<T> {
        loop {
            match self.rx.try_recv() {
                Ok(Message::Progress(p)) => self.progress = Some(p),
                Ok(Message::Done(t)) => return Some(t),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
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

/// Polls an optional task: the result when it finished (and the slot is emptied).
pub fn finished<P, T>(slot: &mut Option<Task<P, T>>) -> Option<T> {
    let result = slot.as_mut()?.poll();
    if result.is_some() {
        *slot = None;
    }
    result
}
