//! The map: the library's hash codes in 2-D, coloured by label; PCA at once, t-SNE when the
//! background run finishes. The query's file and its hits are ringed; hover names a point,
//! click plays it, double-click searches with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui::{self, Color32};
use egui_plot::{Legend, MarkerShape, Plot, PlotPoints, Points};

use super::jobs::{self, MapPoint, Projection};
use super::task::{self, Task};
use super::{Command, EarshotApp};
use crate::index::Index;
use crate::model::Mode;

/// Screen distance (points) within which the pointer picks a map point.
const PICK_RADIUS: f32 = 8.0;

/// Reports the t-SNE epoch reached.
type ProjectionTask = Task<usize, Result<Vec<MapPoint>, String>>;

#[derive(Default)]
pub struct MapState {
    /// What the points were computed for: library index, mode.
    key: Option<(PathBuf, Mode, usize)>,
    pub pca: Option<Vec<MapPoint>>,
    pub tsne: Option<Vec<MapPoint>>,
    pca_task: Option<ProjectionTask>,
    tsne_task: Option<ProjectionTask>,
    pub error: Option<String>,
    pub show_pca: bool,
    /// Where each file's point was drawn in the last frame (for picking, and for tests).
    pub screen_points: Vec<(usize, egui::Pos2)>,
    /// The shown points arranged for drawing; rebuilt when the projection shown changes.
    layout: Option<Arc<Layout>>,
}

/// What drawing the map needs, computed once per projection rather than every frame (a
/// library can have tens of thousands of files).
struct Layout {
    projection: Projection,
    points: Vec<MapPoint>,
    /// Per label (sorted, so colours stay put): its points.
    groups: Vec<(String, Vec<[f64; 2]>)>,
    position: HashMap<PathBuf, [f64; 2]>,
}

impl Layout {
    fn new(index: &Index, points: &[MapPoint], projection: Projection) -> Self {
        let labels = label_order(index);
        let mut groups: Vec<(String, Vec<[f64; 2]>)> =
            labels.into_iter().map(|l| (l, Vec::new())).collect();
        let mut position = HashMap::new();
        for p in points {
            let f = &index.files[p.file];
            let pos = [f64::from(p.pos[0]), f64::from(p.pos[1])];
            if let Ok(g) = groups.binary_search_by(|(l, _)| l.cmp(&f.label)) {
                groups[g].1.push(pos);
            }
            position.insert(f.path.clone(), pos);
        }
        Self {
            projection,
            points: points.to_vec(),
            groups,
            position,
        }
    }
}

impl MapState {
    pub fn invalidate(&mut self) {
        *self = Self {
            show_pca: self.show_pca,
            ..Self::default()
        };
    }

    pub fn is_busy(&self) -> bool {
        self.pca_task.is_some() || self.tsne_task.is_some()
    }

    /// Seconds t-SNE has run and the epoch it reached, while it runs.
    pub fn tsne_progress(&self) -> Option<(f64, usize)> {
        let t = self.tsne_task.as_ref()?;
        Some((t.elapsed().as_secs_f64(), t.progress.unwrap_or(0)))
    }

    pub fn poll(&mut self) {
        match task::finished_flat(&mut self.pca_task) {
            Some(Ok(p)) => self.pca = Some(p),
            Some(Err(e)) => self.error = Some(e),
            None => {}
        }
        match task::finished_flat(&mut self.tsne_task) {
            Some(Ok(p)) => self.tsne = Some(p),
            Some(Err(e)) => self.error = Some(e),
            None => {}
        }
    }

    /// Starts PCA and t-SNE for this library and mode unless they are computed or running.
    fn ensure(
        &mut self,
        ctx: &egui::Context,
        db: &std::path::Path,
        index: &Arc<Index>,
        mode: Mode,
    ) {
        let key = (db.to_owned(), mode, Arc::as_ptr(index) as usize);
        if self.key.as_ref() == Some(&key) {
            return;
        }
        self.invalidate();
        self.key = Some(key);
        let spawn = |method: Projection, name: &str| {
            let index = index.clone();
            Task::spawn(ctx, name, move |r| {
                jobs::project(&index, mode, method, |epoch| {
                    if epoch % 20 == 0 {
                        r.progress(epoch);
                    }
                })
            })
        };
        self.pca_task = Some(spawn(Projection::Pca, "pca"));
        self.tsne_task = Some(spawn(Projection::Tsne, "tsne"));
    }

    fn layout(&mut self, index: &Index) -> Option<Arc<Layout>> {
        let (points, projection) = self.points()?;
        if self
            .layout
            .as_ref()
            .is_none_or(|l| l.projection != projection)
        {
            self.layout = Some(Arc::new(Layout::new(index, points, projection)));
        }
        self.layout.clone()
    }

    fn points(&self) -> Option<(&[MapPoint], Projection)> {
        match (&self.tsne, &self.pca) {
            (Some(t), _) if !self.show_pca => Some((t, Projection::Tsne)),
            (_, Some(p)) => Some((p, Projection::Pca)),
            (Some(t), None) => Some((t, Projection::Tsne)),
            (None, None) => None,
        }
    }
}

pub fn show(app: &mut EarshotApp, ui: &mut egui::Ui) {
    let Some((lib, Some(index))) = app.current().map(|(l, i)| (l.clone(), i.cloned())) else {
        ui.label("Index a library to see its map.");
        return;
    };
    let mode = app.settings.mode;
    app.map.ensure(ui.ctx(), &lib.db, &index, mode);
    header(app, ui);
    let Some(layout) = app.map.layout(&index) else {
        return;
    };
    let position = |path: &PathBuf| layout.position.get(path).copied();
    let rings: Vec<[f64; 2]> = app
        .results
        .iter()
        .filter_map(|r| position(&r.hit.path))
        .collect();
    let query_pos: Vec<[f64; 2]> = app
        .query
        .as_ref()
        .and_then(|q| q.clip.path.as_ref())
        .and_then(position)
        .into_iter()
        .collect();
    let points = &layout.points;
    let groups = &layout.groups;
    let response = Plot::new("code-map")
        .legend(Legend::default())
        .data_aspect(1.0)
        .show_axes(false)
        .show_grid(false)
        .allow_double_click_reset(false)
        .show(ui, |plot| {
            for (g, (label, pts)) in groups.iter().enumerate() {
                plot.points(
                    Points::new(label.clone(), PlotPoints::from(pts.clone()))
                        .color(label_colour(g))
                        .radius(2.5)
                        .filled(true),
                );
            }
            plot.points(
                Points::new("hits", PlotPoints::from(rings))
                    .shape(MarkerShape::Circle)
                    .filled(false)
                    .radius(6.0)
                    .color(Color32::WHITE),
            );
            plot.points(
                Points::new("query", PlotPoints::from(query_pos))
                    .shape(MarkerShape::Diamond)
                    .radius(9.0)
                    .color(Color32::from_rgb(255, 220, 0)),
            );
            points
                .iter()
                .map(|p| {
                    let at = egui_plot::PlotPoint::new(f64::from(p.pos[0]), f64::from(p.pos[1]));
                    (p.file, plot.screen_from_plot(at))
                })
                .collect::<Vec<_>>()
        });
    app.map.screen_points = response.inner;

    let Some(file) = response
        .response
        .hover_pos()
        .and_then(|pointer| nearest(&app.map.screen_points, pointer))
    else {
        return;
    };
    let f = &index.files[file];
    let plot_response = response.response.on_hover_text(format!(
        "{}\n{} · {:.2} s\nclick: play · double-click: search with it",
        super::text::file_name(&f.path),
        f.label,
        f.duration_s
    ));
    if plot_response.double_clicked() {
        app.push(Command::QueryFile(f.path.clone(), None));
    } else if plot_response.clicked() {
        app.push(Command::PlayFile(f.path.clone(), 0.0));
    }
}

fn header(app: &mut EarshotApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.strong("Map of hash codes");
        let state = &mut app.map;
        if state.pca.is_some() {
            ui.selectable_value(&mut state.show_pca, false, "t-SNE");
            ui.selectable_value(&mut state.show_pca, true, "PCA");
        }
        if let Some((seconds, epoch)) = state.tsne_progress() {
            let total = crate::projection::TSNE_EPOCHS;
            ui.add(
                egui::ProgressBar::new(epoch as f32 / total as f32)
                    .desired_width(120.0)
                    .text(format!("t-SNE {epoch}/{total}")),
            );
            ui.weak(format!("{seconds:.0} s; PCA shown meanwhile"));
        }
        if let Some(e) = &state.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        ui.weak("one point per file · rings: results · diamond: query");
    });
}

/// The file whose point is nearest the pointer, within [`PICK_RADIUS`].
fn nearest(points: &[(usize, egui::Pos2)], pointer: egui::Pos2) -> Option<usize> {
    points
        .iter()
        .map(|&(file, at)| (file, at.distance(pointer)))
        .filter(|(_, d)| *d <= PICK_RADIUS)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(file, _)| file)
}

/// Labels sorted, so each keeps its colour from run to run.
fn label_order(index: &Index) -> Vec<String> {
    let mut labels: Vec<String> = index.files.iter().map(|f| f.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Distinct colours around the hue circle (golden-angle steps).
fn label_colour(i: usize) -> Color32 {
    let hue = (i as f32 * 0.618_034) % 1.0;
    egui::ecolor::Hsva::new(hue, 0.75, 0.95, 1.0).into()
}
