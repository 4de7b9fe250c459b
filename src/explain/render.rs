//! Pictures of an explanation: a PNG heat map over the image (clean and adversarial side by
//! side, one colour scale), an SVG bar chart of named attributions (features, words, bytes),
//! and an HTML page with the words coloured by weight. Red: towards the target class; blue:
//! against it.

use std::fmt::Write;

use super::faithfulness::largest;
use super::run::{Map, Report, Side};

/// Pixels per image pixel in the heat map.
const SCALE: u32 = 8;
/// Bars per chart.
const BARS: usize = 20;

/// The colour scale: the 99th percentile of |value| over every map of every side (one scale
/// for the comparison; a few extreme coordinates do not wash the rest out).
fn extent(report: &Report) -> f64 {
    let mut all: Vec<f64> = report
        .sides
        .iter()
        .flat_map(|s| &s.maps)
        .flat_map(|m| &m.values)
        .map(|v| v.abs())
        .filter(|v| v.is_finite())
        .collect();
    all.sort_by(f64::total_cmp);
    let m = all
        .get((all.len() as f64 * 0.99) as usize)
        .or(all.last())
        .copied()
        .unwrap_or(0.0);
    if m > 0.0 { m } else { 1.0 }
}

/// Red for positive, blue for negative, white for zero; `t` in [−1, 1].
fn diverging(t: f64) -> [u8; 3] {
    let u = (255.0 * (1.0 - t.abs().min(1.0))) as u8;
    if t >= 0.0 { [255, u, u] } else { [u, u, 255] }
}

/// One row per side: the image (grey) and its attributions over it; `None` for models that
/// do not read images.
pub fn heatmap_png(report: &Report) -> Result<Option<Vec<u8>>, image::ImageError> {
    let sides: Vec<&Side> = report
        .sides
        .iter()
        .filter(|s| !s.pixels.is_empty())
        .collect();
    let Some(first) = sides.first() else {
        return Ok(None);
    };
    let (h, w) = (28u32, (first.pixels.len() / 28) as u32);
    let (cell_w, cell_h) = (w * SCALE, h * SCALE);
    let scale = extent(report);
    let mut img = image::RgbImage::from_pixel(
        2 * cell_w + 8,
        sides.len() as u32 * (cell_h + 8),
        image::Rgb([255, 255, 255]),
    );
    for (r, side) in sides.iter().enumerate() {
        let values = &side.maps[0].values;
        for (i, (&p, &v)) in side.pixels.iter().zip(values).enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            let grey = (p.clamp(0.0, 1.0) * 255.0) as u8;
            let c = diverging(v / scale);
            // The image dimmed underneath, the colour over it in proportion to |v|.
            let t = (v.abs() / scale).min(1.0);
            let blend = |k: usize| (0.4 * grey as f64 * (1.0 - t) + c[k] as f64 * t) as u8;
            let over = image::Rgb([blend(0), blend(1), blend(2)]);
            for dy in 0..SCALE {
                for dx in 0..SCALE {
                    let gy = r as u32 * (cell_h + 8) + y * SCALE + dy;
                    img.put_pixel(x * SCALE + dx, gy, image::Rgb([grey; 3]));
                    img.put_pixel(cell_w + 8 + x * SCALE + dx, gy, over);
                }
            }
        }
    }
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(Some(png.into_inner()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The maps that have names (words, bytes, features), with their side.
fn named(report: &Report) -> Vec<(&Side, &Map)> {
    report
        .sides
        .iter()
        .flat_map(|s| s.maps.iter().map(move |m| (s, m)))
        .filter(|(_, m)| !m.names.is_empty())
        .collect()
}

/// Horizontal bars of the largest attributions of every named map; `None` if there are none.
pub fn bars_svg(report: &Report) -> Option<String> {
    let maps = named(report);
    if maps.is_empty() {
        return None;
    }
    // Bars are scaled to the largest |value| (the colours of the pictures to a percentile).
    let scale = maps
        .iter()
        .flat_map(|(_, m)| &m.values)
        .fold(0.0f64, |a, v| a.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let (row, label_w, bar_w) = (18.0, 190.0, 320.0);
    let mut y = 10.0;
    let mut body = String::new();
    for (side, map) in maps {
        let _ = write!(
            body,
            r#"<text x="4" y="{}" font-weight="bold">{} {} (share {:.0}%)</text>"#,
            y + 12.0,
            escape(&side.input),
            escape(&map.modality),
            100.0 * map.share
        );
        y += row + 4.0;
        for i in largest(&map.values, BARS) {
            let v = map.values[i];
            let len = bar_w / 2.0 * (v.abs() / scale);
            let x0 = label_w + bar_w / 2.0 - if v < 0.0 { len } else { 0.0 };
            let [r, g, b] = diverging(v.signum());
            let _ = write!(
                body,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{x0:.1}" y="{}" width="{len:.1}" height="{}" fill="rgb({r},{g},{b})"/><text x="{}" y="{}">{v:.4}</text>"#,
                label_w - 6.0,
                y + 12.0,
                escape(&map.names[i]),
                y + 2.0,
                row - 4.0,
                label_w + bar_w + 6.0,
                y + 12.0
            );
            y += row;
        }
        y += 8.0;
    }
    Some(format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{y}" font-family="sans-serif" font-size="12"><line x1="{c}" y1="0" x2="{c}" y2="{y}" stroke="grey"/>{body}</svg>"#,
        label_w + bar_w + 80.0,
        c = label_w + bar_w / 2.0
    ))
}

/// A page with every text map's words coloured by weight, the modality shares and the bars;
/// `None` if no map has names.
pub fn words_html(report: &Report) -> Option<String> {
    let bars = bars_svg(report)?;
    let scale = extent(report);
    let mut body = String::new();
    for side in &report.sides {
        let target = report.classes.get(side.target).cloned().unwrap_or_default();
        let _ = write!(
            body,
            "<h2>{}: predicted {}, explaining {} (p = {:.3})</h2><p>",
            escape(&side.input),
            escape(report.classes.get(side.prediction).map_or("?", |s| s)),
            escape(&target),
            side.probability
        );
        for map in &side.maps {
            let _ = write!(
                body,
                "{} {:.0}% &nbsp; ",
                escape(&map.modality),
                100.0 * map.share
            );
        }
        body.push_str("</p>");
        for map in side.maps.iter().filter(|m| m.modality == "text") {
            body.push_str("<p class=\"text\">");
            for (word, v) in map.names.iter().zip(&map.values) {
                let [r, g, b] = diverging(v / scale);
                let _ = write!(
                    body,
                    "<span style=\"background:rgb({r},{g},{b})\" title=\"{v:.4}\">{}</span> ",
                    escape(word)
                );
            }
            body.push_str("</p>");
        }
    }
    Some(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rampart explain: {}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}\
         .text span{{padding:2px 3px;border-radius:3px;line-height:2}}</style></head><body>\
         <h1>{} on {}</h1><p>{} · red: towards the class explained, blue: against it</p>{body}{bars}</body></html>",
        escape(&report.method),
        escape(&report.method),
        escape(&report.model.path.display().to_string()),
        escape(&report.data.name)
    ))
}

/// The terminal rendering: the prediction, and per map its sum, delta or fit, and its largest
/// attributions.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let class = |c: usize| {
            self.classes
                .get(c)
                .cloned()
                .unwrap_or_else(|| c.to_string())
        };
        writeln!(
            f,
            "explain: {} on {} ({})",
            self.method,
            self.model.description,
            self.model.path.display()
        )?;
        match (self.example, self.label) {
            (Some(i), Some(l)) => {
                writeln!(f, "example {i} of {} (label {})", self.data.name, class(l))?
            }
            _ => writeln!(f, "input: {}", self.data.name)?,
        }
        for side in &self.sides {
            writeln!(
                f,
                "{}: predicted {}; explaining {} (p = {:.4})",
                side.input,
                class(side.prediction),
                class(side.target),
                side.probability
            )?;
            for map in &side.maps {
                // LIME's sum is over its features (a word or byte chunk once).
                let sum: f64 = match map.lime.as_ref().filter(|s| !s.features.is_empty()) {
                    Some(s) => s.features.iter().map(|(_, w)| w).sum(),
                    None => map.values.iter().sum(),
                };
                write!(
                    f,
                    "  {} (share {:.1}%): sum {sum:.4}",
                    map.modality,
                    100.0 * map.share
                )?;
                if let Some(d) = map.completeness_delta {
                    write!(f, ", completeness delta {d:+.2e}")?;
                }
                if let Some(s) = &map.lime {
                    write!(
                        f,
                        ", LIME R² {:.3} (surrogate {:.4} vs model {:.4})",
                        s.r2, s.local_prediction, s.model_prediction
                    )?;
                }
                writeln!(f)?;
                let patches = map
                    .lime
                    .as_ref()
                    .map(|s| &s.features)
                    .filter(|f| !f.is_empty());
                if let Some(features) = patches {
                    let weights: Vec<f64> = features.iter().map(|(_, w)| *w).collect();
                    let shown: Vec<String> = largest(&weights, 5)
                        .into_iter()
                        .map(|i| format!("{} {:+.4}", features[i].0, weights[i]))
                        .collect();
                    writeln!(f, "    top features: {}", shown.join(", "))?;
                    continue;
                }
                let names: Vec<String> = if map.names.is_empty() {
                    let w = map.shape.last().copied().unwrap_or(1).max(1);
                    (0..map.values.len())
                        .map(|i| format!("({}, {})", i / w, i % w))
                        .collect()
                } else {
                    map.names.clone()
                };
                let shown: Vec<String> = largest(&map.values, 8)
                    .into_iter()
                    .filter(|&i| map.values[i] != 0.0)
                    .map(|i| format!("{} {:+.4}", names[i], map.values[i]))
                    .collect();
                if !shown.is_empty() {
                    writeln!(f, "    top: {}", shown.join(", "))?;
                }
            }
        }
        for s in &self.skipped {
            writeln!(f, "skipped {s}")?;
        }
        Ok(())
    }
}
