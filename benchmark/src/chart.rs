//! SVG and PNG bar charts of a report (plotters, log scale).
//!
//! Text is drawn with DejaVu Sans from Debian's `fonts-dejavu-core` (through
//! plotters' `ab_glyph` backend, registered once); where that font is not
//! installed the charts are drawn without text (bars, axes and grid only).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Report;
use crate::BenchError;

/// Where Debian's `fonts-dejavu-core` installs the font.
pub const DEJAVU_SANS: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers DejaVu Sans as plotters' `sans-serif` once; whether text can be
/// drawn.
pub fn fonts_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let Ok(bytes) = std::fs::read(DEJAVU_SANS) else {
            return false;
        };
        // plotters keeps the font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// One bar group per row, one bar per environment.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartData {
    /// Row labels.
    pub rows: Vec<String>,
    /// Environment names.
    pub envs: Vec<String>,
    /// `values[row][env]`: median ns, `None` where it did not run.
    pub values: Vec<Vec<Option<f64>>>,
}

impl ChartData {
    /// The medians of `report`: rows that ran somewhere, environments that
    /// ran something.
    pub fn from_report(report: &Report) -> ChartData {
        let mut rows: Vec<String> = Vec::new();
        let mut envs: Vec<String> = Vec::new();
        for r in &report.records {
            if r.summary.is_some() {
                if !rows.contains(&r.row) {
                    rows.push(r.row.clone());
                }
                if !envs.contains(&r.env) {
                    envs.push(r.env.clone());
                }
            }
        }
        let values = rows
            .iter()
            .map(|row| envs.iter().map(|env| report.median(row, env)).collect())
            .collect();
        ChartData { rows, envs, values }
    }

    fn max(&self) -> f64 {
        self.values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(1.0, f64::max)
    }
}

fn chart_err(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |reason| BenchError::Chart {
        path: path.to_path_buf(),
        reason,
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &ChartData,
    text: bool,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = data.rows.len().max(1) as f64;
    let y_max = data.max() * 3.0;
    let mut builder = ChartBuilder::on(root);
    builder.margin(20);
    if text {
        builder
            .caption(
                "pkbpf benchmark: median ns per call (log scale)",
                ("sans-serif", 22),
            )
            .x_label_area_size(40)
            .y_label_area_size(260);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    // Rows top to bottom: row i occupies y in [n - i - 1, n - i).
    let mut chart = builder
        .build_cartesian_2d((0.1f64..y_max).log_scale(), 0f64..n)
        .map_err(|e| e.to_string())?;
    let rows = data.rows.clone();
    let count = rows.len();
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().y_labels(count * 2 + 1);
    if text {
        let fmt = move |y: &f64| {
            if (y - y.floor() - 0.5).abs() < 1e-6 {
                let i = count.checked_sub(y.floor() as usize + 1);
                i.and_then(|i| rows.get(i))
                    .map(|r| r.trim_start_matches("__bench_").to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        mesh.y_label_formatter(&fmt)
            .x_label_formatter(&|x: &f64| {
                if *x >= 1.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .x_desc("ns per call")
            .draw()
            .map_err(|e| e.to_string())?;
    } else {
        mesh.disable_x_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    let k = data.envs.len().max(1) as f64;
    let height = 0.8 / k;
    for (e, env) in data.envs.iter().enumerate() {
        let color = Palette99::pick(e).to_rgba();
        let bars = data.values.iter().enumerate().filter_map(|(i, vals)| {
            vals[e].map(|v| {
                let y1 = n - i as f64 - 0.1 - e as f64 * height;
                Rectangle::new([(0.1, y1 - height * 0.9), (v.max(0.1), y1)], color.filled())
            })
        });
        let series = chart.draw_series(bars).map_err(|e| e.to_string())?;
        if text {
            series.label(env.clone()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (1200, 1000);

/// Draws `data` as an SVG file.
pub fn write_svg(data: &ChartData, path: &Path) -> Result<PathBuf, BenchError> {
    let text = fonts_available();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    draw(&root, data, text).map_err(chart_err(path))?;
    drop(root);
    check_nonempty(path)
}

/// Draws `data` as a PNG file.
pub fn write_png(data: &ChartData, path: &Path) -> Result<PathBuf, BenchError> {
    let text = fonts_available();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(&root, data, text).map_err(chart_err(path))?;
    drop(root);
    check_nonempty(path)
}

fn check_nonempty(path: &Path) -> Result<PathBuf, BenchError> {
    let len = std::fs::metadata(path)
        .map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len == 0 {
        return Err(BenchError::Chart {
            path: path.to_path_buf(),
            reason: "empty file".into(),
        });
    }
    Ok(path.to_path_buf())
}
