//! The map: the library's hash codes in 2-D, coloured by label; PCA at once, t-SNE when the
//! background run finishes. The query's file and its hits are ringed; hover names a point,
//! click plays it, double-click searches with it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui::{self, Color32};
use egui_plot::{MarkerShape, Plot, PlotPoints, Points};

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
    if let Some(server) = &lib.server {
        let why = format!(
            "The map places every file by its codes, and this library's index keeps them on {}: \
             keep the index on this computer (\"Server…\" in the library panel, left empty) to see \
             its map.",
            server.display()
        );
        ui.add(egui::Label::new(why).wrap());
        return;
    }
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
    // Beside the map, not over it: fifty labels would cover the points they name.
    egui::Panel::right("map-legend")
        .resizable(true)
        .default_size(170.0)
        .show(ui, |ui| legend(ui, groups));
    let response = Plot::new("code-map")
        .data_aspect(1.0)
        .show_axes(false)
        .show_grid(false)
        .allow_double_click_reset(false)
        .show(ui, |plot| {
            for (g, (label, pts)) in groups.iter().enumerate() {
                let (colour, shape) = label_style(g);
                plot.points(
                    Points::new(label.clone(), PlotPoints::from(pts.clone()))
                        .color(colour)
                        .shape(shape)
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

/// Label colours: Okabe and Ito's palette (told apart under the common colour blindnesses;
/// its black is grey here, on a dark background).
const PALETTE: [Color32; 8] = [
    Color32::from_rgb(230, 159, 0),
    Color32::from_rgb(86, 180, 233),
    Color32::from_rgb(0, 158, 115),
    Color32::from_rgb(240, 228, 66),
    Color32::from_rgb(0, 114, 178),
    Color32::from_rgb(213, 94, 0),
    Color32::from_rgb(204, 121, 167),
    Color32::from_rgb(170, 170, 170),
];
/// After each round of colours, the next marker shape: 56 labels look different.
const SHAPES: [MarkerShape; 7] = [
    MarkerShape::Circle,
    MarkerShape::Square,
    MarkerShape::Diamond,
    MarkerShape::Up,
    MarkerShape::Down,
    MarkerShape::Cross,
    MarkerShape::Plus,
];

/// The `i`th label's colour and marker.
fn label_style(i: usize) -> (Color32, MarkerShape) {
    (
        PALETTE[i % PALETTE.len()],
        SHAPES[(i / PALETTE.len()) % SHAPES.len()],
    )
}

/// Every label with its marker and number of files, in a list that scrolls.
fn legend(ui: &mut egui::Ui, groups: &[(String, Vec<[f64; 2]>)]) {
    ui.strong("labels");
    egui::ScrollArea::vertical()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for (g, (label, pts)) in groups.iter().enumerate() {
                ui.horizontal(|ui| {
                    let size = ui.text_style_height(&egui::TextStyle::Body);
                    let (rect, _) =
                        ui.allocate_exact_size(egui::Vec2::splat(size), egui::Sense::hover());
                    let (colour, shape) = label_style(g);
                    marker(ui.painter(), rect.shrink(size * 0.2), colour, shape);
                    ui.add(egui::Label::new(format!("{label} ({})", pts.len())).truncate());
                });
            }
        });
}

/// A marker as the plot draws it, in `rect`.
fn marker(painter: &egui::Painter, rect: egui::Rect, colour: Color32, shape: MarkerShape) {
    use egui::{Pos2, Shape, Stroke};
    let (c, r) = (rect.center(), rect.width() / 2.0);
    let stroke = Stroke::new(1.5, colour);
    let polygon = |points: Vec<Pos2>| Shape::convex_polygon(points, colour, Stroke::NONE);
    match shape {
        MarkerShape::Square => {
            painter.rect_filled(rect, 0.0, colour);
        }
        MarkerShape::Diamond => {
            painter.add(polygon(vec![
                c - egui::vec2(0.0, r),
                c + egui::vec2(r, 0.0),
                c + egui::vec2(0.0, r),
                c - egui::vec2(r, 0.0),
            ]));
        }
        MarkerShape::Up => {
            painter.add(polygon(vec![
                rect.center_top(),
                rect.right_bottom(),
                rect.left_bottom(),
            ]));
        }
        MarkerShape::Down => {
            painter.add(polygon(vec![
                rect.left_top(),
                rect.right_top(),
                rect.center_bottom(),
            ]));
        }
        MarkerShape::Cross => {
            painter.line_segment([rect.left_top(), rect.right_bottom()], stroke);
            painter.line_segment([rect.right_top(), rect.left_bottom()], stroke);
        }
        MarkerShape::Plus => {
            painter.line_segment([rect.center_top(), rect.center_bottom()], stroke);
            painter.line_segment([rect.left_center(), rect.right_center()], stroke);
        }
        _ => {
            painter.circle_filled(c, r, colour);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::label_style;

    #[test]
    fn fifty_labels_each_get_a_look_of_their_own() {
        let styles: Vec<_> = (0..50).map(label_style).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert!(a != b, "{a:?} repeats");
            }
        }
    }
}
