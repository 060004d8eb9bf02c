//! Where the encoder looks, drawn over the query's spectrogram and the inspected result's: made
//! in the background after a search or a selection (it encodes the clip once per cell of its
//! map), one map at a time, and kept only if what it was made for is still shown.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use super::spectrogram_view::ShownClip;
use super::task::Task;
use super::{EarshotApp, jobs};
use crate::model::AttentionMap;
use crate::session::Clip;

/// What an attention map is made for: the query (its samples' address, which no other clip
/// shares while it is shown) and its searched region, or the inspected result (its file and
/// start).
#[derive(Debug, Clone, PartialEq)]
pub enum AttentionFor {
    Query(usize, (f64, f64)),
    Result(PathBuf, f64),
}

/// Making an attention map: `None` when the encoder has none to give.
pub type AttentionTask = Task<(), Result<Option<AttentionMap>, String>>;

fn clip_id(clip: &ShownClip) -> usize {
    Arc::as_ptr(clip.samples()) as usize
}

impl EarshotApp {
    /// Takes in a finished attention map where it is still wanted, then starts the next one
    /// the window shows: the query's first, then the inspected result's. One runs at a time, so
    /// that moving quickly through the results leaves at most one stale map being made.
    pub(super) fn poll_attention(&mut self, ctx: &egui::Context) {
        if let Some((done_for, task)) = &mut self.tasks.attention
            && let Some(result) = task.poll()
        {
            let done_for = done_for.clone();
            self.tasks.attention = None;
            let map = result.and_then(|r| r).unwrap_or_else(|e| {
                self.notify(format!("cannot draw where the encoder looks: {e}"));
                None
            });
            // A map no longer shown is dropped; the one wanted now starts below.
            if let Some(slot) = self.attention_slot(&done_for) {
                *slot = Some(map);
            }
        }
        if self.tasks.attention.is_some() || !self.settings.show_attention {
            return;
        }
        let Some((wanted, clip, span)) = self.wanted_attention() else {
            return;
        };
        let (Some(encoders), mode) = (self.encoders.clone(), self.settings.mode) else {
            return;
        };
        let task = Task::spawn(ctx, "attention", move |_| {
            jobs::attention(&encoders, mode, &clip, span)
        });
        self.tasks.attention = Some((wanted, task));
    }

    /// The attention map shown and not yet made: what it is for, its clip and the span of it.
    fn wanted_attention(&self) -> Option<(AttentionFor, Clip, (f64, f64))> {
        if let Some(q) = &self.query
            && let (Some(outcome), None) = (&q.outcome, &q.attention)
        {
            let wanted = AttentionFor::Query(clip_id(&q.clip), outcome.region);
            return Some((wanted, q.clip.clip.clone(), outcome.region));
        }
        let Some(Ok(inspected)) = &self.inspector else {
            return None;
        };
        let hit = &inspected.hit;
        let wanted = AttentionFor::Result(hit.path.clone(), hit.start_s);
        let unmade = inspected.attention.is_none();
        unmade.then(|| (wanted, inspected.clip.clip.clone(), inspected.matched))
    }

    /// Where a map made for `target` goes, if that is still shown.
    fn attention_slot(
        &mut self,
        target: &AttentionFor,
    ) -> Option<&mut Option<Option<AttentionMap>>> {
        match target {
            AttentionFor::Query(clip, region) => (self.query.as_mut())
                .filter(|q| clip_id(&q.clip) == *clip)
                .filter(|q| q.outcome.as_ref().map(|o| o.region) == Some(*region))
                .map(|q| &mut q.attention),
            AttentionFor::Result(path, start_s) => match &mut self.inspector {
                Some(Ok(i)) if i.hit.path == *path && i.hit.start_s == *start_s => {
                    Some(&mut i.attention)
                }
                _ => None,
            },
        }
    }
}
