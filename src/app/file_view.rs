//! The selected result's whole recording as an outline with every result in it marked, so that a
//! long file can be seen whole and zoomed into: Ctrl+scroll (or pinch) zooms, dragging or
//! scrolling moves along it, a double click shows it whole again, and a click on a mark selects
//! that result. The outline is read in the background, once per file.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use eframe::egui::{self, Color32, Pos2, Rect, Stroke};
use egui_plot::{Plot, PlotPoint, PlotTransform};

use super::task::{self, Task};
use super::text::clock;
use super::{Command, EarshotApp};
use crate::audio::Envelope;

/// Height of the outline, in points.
const HEIGHT: f32 = 64.0;
/// Seconds of audio read between two progress reports (each repaints the window).
const PROGRESS_EVERY_S: f64 = 30.0;
/// A click this close to a mark (in points) selects it: a short hit in a long file is a sliver.
const CLICK_SLACK: f32 = 4.0;

/// The file outlined, or being outlined.
#[derive(Default)]
pub struct FileView {
    path: Option<PathBuf>,
    outline: Option<Result<Arc<Envelope>, String>>,
    /// Reading it, reporting the seconds read so far.
    task: Option<Task<f64, Result<Envelope, String>>>,
}

impl FileView {
    /// Starts reading `path`'s outline, unless it is the one shown or under way already.
    pub fn open(&mut self, ctx: &egui::Context, path: &Path) {
        if self.path.as_deref() == Some(path) {
            return;
        }
        if let Some(previous) = &self.task {
            previous.cancel();
        }
        (self.path, self.outline) = (Some(path.to_owned()), None);
        let path = path.to_owned();
        self.task = Some(Task::spawn(ctx, "file-outline", move |reporter| {
            let mut reported_s = 0.0;
            let outline = Envelope::read(&path, |seconds| {
                if seconds - reported_s >= PROGRESS_EVERY_S {
                    reported_s = seconds;
                    reporter.progress(seconds);
                }
                match reporter.cancel_flag().load(Ordering::Relaxed) {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                }
            });
            outline.map_err(|e| e.to_string())
        }));
    }

    pub fn poll(&mut self) {
        if let Some(result) = task::finished_flat(&mut self.task) {
            self.outline = Some(result.map(Arc::new));
        }
    }

    pub fn is_busy(&self) -> bool {
        self.task.is_some()
    }
}

/// A result's place in the file shown.
struct Mark {
    result: usize,
    start_s: f64,
    end_s: f64,
}

/// Draws the outline of `path` (when it is the file the view holds) with the results in it.
pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui, path: &Path) {
    let view = &app.file_view;
    if view.path.as_deref() != Some(path) {
        return;
    }
    let outline = match &view.outline {
        Some(Ok(outline)) => outline.clone(),
        Some(Err(e)) => {
            ui.weak(format!("cannot draw the whole file: {e}"));
            return;
        }
        None => {
            let read_s = view.task.as_ref().and_then(|t| t.progress).unwrap_or(0.0);
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!("reading the whole file… {} so far", clock(read_s)));
            });
            return;
        }
    };
    let marks: Vec<Mark> = (app.results.iter().enumerate())
        .filter(|(_, r)| r.hit.path == path)
        .map(|(result, r)| Mark {
            result,
            start_s: r.hit.start_s,
            end_s: r.hit.end_s,
        })
        .collect();
    ui.weak(format!(
        "The whole file ({}), {} marked",
        clock(outline.duration_s),
        super::text::count(marks.len(), "result"),
    ));
    let duration_s = outline.duration_s.max(1e-3);
    let shown = Plot::new(("whole-file", path))
        .height(HEIGHT)
        .default_x_bounds(0.0, duration_s)
        .default_y_bounds(-1.0, 1.0)
        .allow_zoom([true, false])
        .allow_drag([true, false])
        .allow_scroll([true, false])
        .allow_boxed_zoom(false)
        .show_axes([true, false])
        .show_grid([true, false])
        .show_x(false)
        .show_y(false)
        .x_axis_formatter(|mark, _| axis_clock(mark.value, mark.step_size))
        .show(ui, |plot| {
            // The view stays within the file: no further out than all of it, no scrolling past it.
            let bounds = plot.plot_bounds();
            let width = (bounds.max()[0] - bounds.min()[0]).min(duration_s);
            let from = bounds.min()[0].clamp(0.0, duration_s - width);
            if (from, width) != (bounds.min()[0], bounds.max()[0] - bounds.min()[0]) {
                plot.set_plot_bounds_x(from..=from + width);
            }
            plot.set_plot_bounds_y(-1.0..=1.0);
        });
    let shown_response = shown
        .response
        .on_hover_text("Ctrl+scroll to zoom, drag to move along, double-click to see it all; click a mark to select its result");
    shown_response
        .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Figure, true, "the whole file"));
    let transform = shown.transform;
    let painter = ui.painter_at(*transform.frame());
    draw_outline(&painter, &transform, &outline, ui.visuals().text_color());
    draw_marks(&painter, &transform, &marks, app.selected, ui.visuals());
    if shown_response.clicked()
        && let Some(pos) = shown_response.interact_pointer_pos()
        && let Some(mark) = mark_at(&transform, &marks, pos)
    {
        app.push(Command::SelectResult(mark));
    }
}

/// A time on the axis: to the second where its marks are seconds or more apart (`M:SS`), else
/// as [`clock`] writes it.
fn axis_clock(seconds: f64, step_s: f64) -> String {
    if step_s < 1.0 {
        return clock(seconds);
    }
    let whole = seconds.round() as i64;
    match whole >= 3600 {
        true => format!("{}:{:02}:{:02}", whole / 3600, whole / 60 % 60, whole % 60),
        false => format!("{}:{:02}", whole / 60, whole % 60),
    }
}

/// One vertical stroke per point of width, from the lowest sample under it to the highest.
fn draw_outline(painter: &egui::Painter, t: &PlotTransform, outline: &Envelope, color: Color32) {
    let frame = *t.frame();
    let columns = frame.width().max(1.0) as usize;
    let (from_s, to_s) = (t.bounds().min()[0], t.bounds().max()[0]);
    let stroke = Stroke::new(1.0, color.gamma_multiply(0.6));
    for (c, range) in outline.columns(from_s, to_s, columns).iter().enumerate() {
        let Some(range) = range else {
            continue;
        };
        let x = frame.left() + c as f32 + 0.5;
        let y = |v: f32| t.position_from_point(&PlotPoint::new(0.0, f64::from(v))).y;
        // A column of silence is still a visible line.
        let (top, bottom) = (y(range.high), y(range.low).max(y(range.high) + 1.0));
        painter.line_segment([Pos2::new(x, top), Pos2::new(x, bottom)], stroke);
    }
}

/// The results' places, the selected one outlined.
fn draw_marks(
    painter: &egui::Painter,
    t: &PlotTransform,
    marks: &[Mark],
    selected: Option<usize>,
    visuals: &egui::Visuals,
) {
    let colour = visuals.selection.bg_fill;
    for mark in marks {
        let rect = mark_rect(t, mark);
        let is_selected = selected == Some(mark.result);
        let fill = colour.gamma_multiply(if is_selected { 0.55 } else { 0.3 });
        painter.rect_filled(rect, 0.0, fill);
        if is_selected {
            let stroke = Stroke::new(1.5, visuals.selection.stroke.color);
            painter.rect_stroke(rect, 0.0, stroke, egui::StrokeKind::Inside);
        }
    }
}

/// A mark's rectangle, at least two points wide however short the hit.
fn mark_rect(t: &PlotTransform, mark: &Mark) -> Rect {
    let x = |s: f64| t.position_from_point(&PlotPoint::new(s, 0.0)).x;
    let (left, right) = (x(mark.start_s), x(mark.end_s).max(x(mark.start_s) + 2.0));
    Rect::from_x_y_ranges(left..=right, t.frame().y_range())
}

/// The result whose mark is at `pos`, or nearest it within [`CLICK_SLACK`].
fn mark_at(t: &PlotTransform, marks: &[Mark], pos: Pos2) -> Option<usize> {
    let distance = |m: &Mark| {
        let r = mark_rect(t, m);
        (r.left() - pos.x).max(pos.x - r.right()).max(0.0)
    };
    (marks.iter())
        .map(|m| (distance(m), m.result))
        .filter(|(d, _)| *d <= CLICK_SLACK)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, result)| result)
}

#[cfg(test)]
mod tests {
    use super::axis_clock;

    #[test]
    fn axis_times_keep_hundredths_only_when_their_marks_are_that_close() {
        assert_eq!(axis_clock(100.0, 20.0), "1:40");
        assert_eq!(axis_clock(3725.0, 60.0), "1:02:05");
        assert_eq!(axis_clock(1.5, 0.5), "0:01.50");
    }
}
