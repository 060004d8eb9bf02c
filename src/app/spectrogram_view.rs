//! Drawing shared by the query panel and the inspector: a spectrogram with its attention
//! heatmap, a time region over it, and hash codes as bit grids.

use eframe::egui::{self, Color32, Pos2, Rect, Sense, Stroke, Vec2};

use crate::features::mel::hz_to_mel;
use crate::features::{LOG_MEL_BANDS, LogMelConfig};
use crate::model::AttentionMap;
use crate::session::Clip;

/// Highlight for selections and matched regions.
pub const REGION_COLOUR: Color32 = Color32::from_rgb(80, 200, 255);
/// Differing bits in the bit grids: Okabe and Ito's sky blue, told apart from the set bits'
/// yellow under every common colour blindness (and crossed out, for no colour at all).
pub const DIFF_COLOUR: Color32 = Color32::from_rgb(86, 180, 233);

/// A clip with its spectrogram image (made on a background thread: it is the slow part).
#[derive(Clone)]
pub struct ShownClip {
    pub clip: Clip,
    pub spectrogram: Spectrogram,
}

impl ShownClip {
    pub fn new(clip: Clip) -> Self {
        let spectrogram = spectrogram(&clip.log_mel().data);
        Self { clip, spectrogram }
    }
}

impl std::ops::Deref for ShownClip {
    type Target = Clip;

    fn deref(&self) -> &Clip {
        &self.clip
    }
}

/// A log-mel spectrogram ready to draw: one image column per `frames_per_column` frames, low
/// frequencies at the bottom.
#[derive(Clone)]
pub struct Spectrogram {
    pub image: egui::ColorImage,
    pub frames: usize,
    pub frames_per_column: usize,
}

/// Widest spectrogram image (textures have a size limit; the screen is narrower anyway).
const MAX_COLUMNS: usize = 4096;

pub fn spectrogram(log_mel: &[f32]) -> Spectrogram {
    let frames = log_mel.len() / LOG_MEL_BANDS;
    let per_column = frames.div_ceil(MAX_COLUMNS).max(1);
    let columns = frames.div_ceil(per_column).max(1);
    let top = log_mel.iter().copied().fold(f32::MIN, f32::max);
    let floor = top - 80.0;
    let mut pixels = vec![Color32::BLACK; columns * LOG_MEL_BANDS];
    for c in 0..columns {
        let span = c * per_column..((c + 1) * per_column).min(frames);
        for band in 0..LOG_MEL_BANDS {
            let db = span
                .clone()
                .map(|t| log_mel[t * LOG_MEL_BANDS + band])
                .fold(f32::MIN, f32::max);
            let row = LOG_MEL_BANDS - 1 - band;
            pixels[row * columns + c] = colormap((db - floor) / 80.0);
        }
    }
    Spectrogram {
        image: egui::ColorImage::new([columns, LOG_MEL_BANDS], pixels),
        frames,
        frames_per_column: per_column,
    }
}

/// Dark blue through purple and orange to pale yellow, for 0..1 (a magma-like ramp).
pub fn colormap(x: f32) -> egui::Color32 {
    const STOPS: [(f32, [u8; 3]); 5] = [
        (0.0, [0, 0, 4]),
        (0.3, [59, 15, 112]),
        (0.55, [183, 55, 121]),
        (0.8, [252, 137, 97]),
        (1.0, [252, 253, 191]),
    ];
    let x = x.clamp(0.0, 1.0);
    let i = STOPS.iter().rposition(|s| s.0 <= x).unwrap_or(0).min(3);
    let ((x0, a), (x1, b)) = (STOPS[i], STOPS[i + 1]);
    let t = (x - x0) / (x1 - x0);
    let mix = |k: usize| (f32::from(a[k]) + t * (f32::from(b[k]) - f32::from(a[k]))) as u8;
    Color32::from_rgb(mix(0), mix(1), mix(2))
}

/// Draws the clip's spectrogram filling `size`; returns the response (drag to select) and
/// the rect it drew in.
pub fn show(
    ui: &mut egui::Ui,
    clip: &ShownClip,
    texture: &mut Option<egui::TextureHandle>,
    size: Vec2,
    attention: Option<&AttentionMap>,
) -> (egui::Response, Rect) {
    let (rect, response) = ui.allocate_exact_size(size, Sense::click_and_drag());
    let tex = texture.get_or_insert_with(|| {
        ui.ctx().load_texture(
            format!("spectrogram-{}", clip.name),
            clip.spectrogram.image.clone(),
            egui::TextureOptions::LINEAR,
        )
    });
    let painter = ui.painter_at(rect);
    painter.image(
        tex.id(),
        rect,
        Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
        Color32::WHITE,
    );
    if let Some(map) = attention {
        draw_attention(&painter, rect, map, clip.spectrogram.frames);
    }
    (response, rect)
}

/// The attention mask as a translucent green-to-yellow layer over the frames it covers.
fn draw_attention(painter: &egui::Painter, rect: Rect, map: &AttentionMap, frames: usize) {
    if map.columns == 0 || map.rows == 0 || frames == 0 {
        return;
    }
    let x_of = |frame: f32| rect.left() + rect.width() * frame / frames as f32;
    let (x0, x1) = (x_of(map.frames.start as f32), x_of(map.frames.end as f32));
    let w = (x1 - x0) / map.columns as f32;
    let (lo, hi) = map
        .values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = (hi - lo).max(1e-6);
    for r in 0..map.rows {
        let (bottom, top) = row_span(map, r);
        let y = |share: f32| rect.bottom() - rect.height() * share;
        if top <= bottom {
            continue;
        }
        for c in 0..map.columns {
            let v = (map.values[r * map.columns + c] - lo) / span;
            let cell = Rect::from_x_y_ranges(
                x0 + c as f32 * w..=x0 + c as f32 * w + w.max(1.0),
                y(top)..=y(bottom),
            );
            let alpha = (v * 140.0) as u8;
            painter.rect_filled(
                cell,
                0.0,
                Color32::from_rgba_unmultiplied(120, 255, 120, alpha),
            );
        }
    }
}

/// Where row `r` of `map` lies on the spectrogram's height, as shares of it from the bottom
/// (row 0 is the lowest bands): an equal share, or its band edges on the drawn mel scale,
/// cut to the drawn range.
fn row_span(map: &AttentionMap, r: usize) -> (f32, f32) {
    let Some(edges) = map
        .row_edges_hz
        .as_ref()
        .filter(|e| e.len() == map.rows + 1)
    else {
        return (r as f32 / map.rows as f32, (r + 1) as f32 / map.rows as f32);
    };
    let drawn = LogMelConfig::default();
    let (low, high) = (hz_to_mel(drawn.fmin_hz), hz_to_mel(drawn.fmax_hz));
    let share = |hz: f32| ((hz_to_mel(f64::from(hz)) - low) / (high - low)).clamp(0.0, 1.0) as f32;
    (share(edges[r]), share(edges[r + 1]))
}

/// Marks `[from_s, to_s]` of a clip `duration_s` long over `rect`.
pub fn draw_region(
    painter: &egui::Painter,
    rect: Rect,
    duration_s: f64,
    region: (f64, f64),
    fill: bool,
) {
    if duration_s <= 0.0 {
        return;
    }
    let x = |t: f64| rect.left() + rect.width() * (t / duration_s).clamp(0.0, 1.0) as f32;
    let r = Rect::from_x_y_ranges(
        x(region.0)..=x(region.1).max(x(region.0) + 1.0),
        rect.y_range(),
    );
    if fill {
        painter.rect_filled(r, 0.0, REGION_COLOUR.gamma_multiply(0.15));
    }
    painter.rect_stroke(
        r,
        0.0,
        Stroke::new(2.0, REGION_COLOUR),
        egui::StrokeKind::Inside,
    );
}

/// Seconds under an x coordinate of `rect`.
pub fn time_at(rect: Rect, duration_s: f64, x: f32) -> f64 {
    f64::from(((x - rect.left()) / rect.width().max(1.0)).clamp(0.0, 1.0)) * duration_s
}

/// A code as a grid of bits (8 per row): set bits filled, bits that differ from `other` blue
/// and crossed.
pub fn bit_grid(ui: &mut egui::Ui, code: &[u64], other: &[u64], bits: usize, cell: f32) {
    let rows = bits.div_ceil(8);
    let (rect, _) =
        ui.allocate_exact_size(Vec2::new(8.0 * cell, rows as f32 * cell), Sense::hover());
    let painter = ui.painter_at(rect);
    let bit = |c: &[u64], b: usize| c.get(b / 64).is_some_and(|w| (w >> (b % 64)) & 1 == 1);
    for b in 0..bits {
        let (r, c) = (b / 8, b % 8);
        let cell_rect = Rect::from_min_size(
            rect.min + Vec2::new(c as f32 * cell, r as f32 * cell),
            Vec2::splat(cell),
        )
        .shrink(1.0);
        let on = bit(code, b);
        let differs = on != bit(other, b);
        let fill = match (on, differs) {
            (true, true) => DIFF_COLOUR,
            (false, true) => DIFF_COLOUR.gamma_multiply(0.35),
            (true, false) => colormap(0.85),
            (false, false) => Color32::from_gray(40),
        };
        painter.rect_filled(cell_rect, 1.0, fill);
        if differs {
            let stroke = Stroke::new(1.0, Color32::from_gray(20));
            let inner = cell_rect.shrink(cell * 0.2);
            painter.line_segment([inner.left_top(), inner.right_bottom()], stroke);
            painter.line_segment([inner.right_top(), inner.left_bottom()], stroke);
        }
    }
}
