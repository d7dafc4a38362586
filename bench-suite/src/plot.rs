//! Plots, drawn with plotters as SVG (no system font libraries needed).

use crate::frontier::pareto_frontier;
use crate::model::{point_near_recall, Report, RunResult};
use crate::recall::RecallKind;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::Path;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

const W: u32 = 900;
const H: u32 = 600;

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Recall is drawn on a logit axis, as ann-benchmarks draws it (matplotlib's
/// `logit` scale): equal steps for 0.9 → 0.99 → 0.999, so the high-recall end,
/// where systems differ, is not squeezed against 1. A recall of 1 is drawn at
/// [`LOGIT_TOP`].
pub const LOGIT_TOP: f64 = 0.9995;

/// Where the recall axis is labelled.
const LOGIT_TICKS: [f64; 13] = [
    0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999,
];

/// ln(r / (1 - r)), with r kept inside (1e-4, [`LOGIT_TOP`]).
pub fn logit(r: f64) -> f64 {
    let r = r.clamp(1e-4, LOGIT_TOP);
    (r / (1.0 - r)).ln()
}

/// The inverse of [`logit`].
pub fn expit(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// Recall@k (by id, logit axis) against single-thread QPS (log axis); every
/// point faint, each system's Pareto frontier as a line (as ann-benchmarks draws
/// it).
pub fn recall_qps(report: &Report, k: usize, path: &Path) -> PlotResult {
    let curves: Vec<(&RunResult, Vec<crate::frontier::Point>)> = report
        .runs
        .iter()
        .map(|r| (r, r.curve(RecallKind::ById, k)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let all = curves.iter().flat_map(|(_, c)| c.iter());
    let (mut rmin, mut qmin, mut qmax) = (1.0f64, f64::INFINITY, 0.0f64);
    for p in all {
        rmin = rmin.min(p.recall);
        qmin = qmin.min(p.qps);
        qmax = qmax.max(p.qps);
    }
    if !qmin.is_finite() {
        return Ok(());
    }
    // From the tick below the lowest recall (at most 0.5) to the top.
    let low = LOGIT_TICKS
        .iter()
        .rev()
        .copied()
        .find(|&t| t < rmin.min(0.5))
        .unwrap_or(0.1);
    let x0 = logit(low);
    let x1 = logit(LOGIT_TOP);
    let ticks: Vec<f64> = LOGIT_TICKS
        .iter()
        .copied()
        .filter(|&t| t >= low)
        .map(logit)
        .collect();
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: recall@{k} (by id) vs QPS, 1 thread, one query at a time",
                report.dataset.name
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, ((qmin / 1.5)..(qmax * 1.5)).log_scale())?;
    // The recall axis is labelled at the ticks by hand: a light line across the
    // plot and the recall under the axis.
    let (y0, y1) = (qmin / 1.5, qmax * 1.5);
    for &t in &ticks {
        chart.draw_series(LineSeries::new(
            [(t, y0), (t, y1)],
            BLACK.mix(0.12).stroke_width(1),
        ))?;
        let r = expit(t);
        // The shortest decimal that names the tick (0.9, 0.95, 0.999).
        let text = (1..=4)
            .map(|d| format!("{r:.d$}"))
            .find(|s| (s.parse::<f64>().unwrap_or(0.0) - r).abs() < 1e-6)
            .unwrap_or_else(|| format!("{r:.4}"));
        let (px, py) = chart.backend_coord(&(t, y0));
        root.draw(&Text::new(
            text,
            (px - 10, py + 6),
            ("sans-serif", 12).into_font(),
        ))?;
    }
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc(format!("recall@{k} (by id), logit scale"))
        .y_desc("queries per second (log)")
        .draw()?;
    for (i, (run, pts)) in curves.iter().enumerate() {
        let c = color(i);
        chart.draw_series(
            pts.iter()
                .map(|p| Circle::new((logit(p.recall), p.qps), 3, c.mix(0.35).filled())),
        )?;
        let f = pareto_frontier(pts);
        chart
            .draw_series(LineSeries::new(
                f.iter().map(|p| (logit(p.recall), p.qps)),
                c.stroke_width(2),
            ))?
            .label(run.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Horizontal bars: one group per system, one bar per labelled value.
fn bars(
    path: &Path,
    title: &str,
    xdesc: &str,
    rows: &[(String, Vec<(String, f64)>)],
    log: bool,
) -> PlotResult {
    let n_rows: usize = rows.iter().map(|(_, v)| v.len().max(1)).sum();
    if n_rows == 0 {
        return Ok(());
    }
    // On a log axis bars are drawn from the lowest decade, and values are plotted
    // as log10 with labels turned back into powers of ten.
    let tx = |v: f64| if log { v.max(1e-9).log10() } else { v };
    let finite = || {
        rows.iter()
            .flat_map(|(_, v)| v.iter().map(|(_, x)| *x))
            .filter(|x| x.is_finite() && *x > 0.0)
    };
    let vmax = finite().fold(0.0f64, f64::max).max(1e-9);
    let vmin = finite().fold(f64::INFINITY, f64::min);
    let (x0, x1) = if log {
        (tx(vmin).floor() - 0.5, tx(vmax).ceil() + 0.2)
    } else {
        (0.0, vmax * 1.1)
    };
    let height = (120 + 26 * n_rows as u32).max(300);
    let root = SVGBackend::new(path, (W, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(330);
    // Labels on the left, drawn as text next to each bar's row.
    let bar_h = (height as f64 - 100.0) / n_rows as f64;
    let mut chart = ChartBuilder::on(&right)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .build_cartesian_2d(x0..x1, 0.0..n_rows as f64)?;
    let fmt_x = |x: &f64| {
        if log {
            format!("{:.0e}", 10f64.powf(*x))
        } else {
            format!("{x:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(xdesc)
        .x_label_formatter(&fmt_x)
        .disable_y_mesh()
        .y_labels(0)
        .draw()?;
    let mut row = 0usize;
    let keys: Vec<String> = {
        let mut k: Vec<String> = Vec::new();
        for (_, v) in rows {
            for (l, _) in v {
                if !k.contains(l) {
                    k.push(l.clone());
                }
            }
        }
        k
    };
    for (name, vals) in rows {
        for (label, v) in vals {
            let ci = keys.iter().position(|k| k == label).unwrap_or(0);
            let y0 = n_rows as f64 - row as f64 - 0.85;
            let y1 = n_rows as f64 - row as f64 - 0.15;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, y0), (tx(*v), y1)],
                color(ci).filled(),
            )))?;
            let text = if log {
                format!("{label}: {v:.3e}")
            } else {
                format!("{label}: {v:.1}")
            };
            left.draw(&Text::new(
                format!("{name} — {text}"),
                (4, (50.0 + bar_h * (row as f64 + 0.3)) as i32),
                ("sans-serif", 11),
            ))?;
            row += 1;
        }
        if vals.is_empty() {
            row += 1;
        }
    }
    root.present()?;
    Ok(())
}

/// Build throughput, each phase its own bar (never summed).
pub fn build_throughput(report: &Report, path: &Path) -> PlotResult {
    let rows: Vec<(String, Vec<(String, f64)>)> = report
        .runs
        .iter()
        .map(|r| {
            let mut v = Vec::new();
            let b = &r.build;
            for (label, p) in [
                ("storage append", &b.storage_append),
                ("durable ingest", &b.durable_ingest),
                ("index train", &b.index_train),
                ("index build", &b.index_build),
            ] {
                if let Some(p) = p {
                    v.push((label.to_string(), p.vectors_per_sec));
                }
            }
            (r.name.clone(), v)
        })
        .collect();
    bars(
        path,
        "build throughput by phase (vectors/s, log scale)",
        "vectors per second (log)",
        &rows,
        true,
    )
}

/// Index bytes per vector.
pub fn memory_per_vector(report: &Report, path: &Path) -> PlotResult {
    let rows: Vec<(String, Vec<(String, f64)>)> = report
        .runs
        .iter()
        .map(|r| {
            let v = r
                .memory
                .index_bytes_per_vector
                .map(|b| vec![("index bytes/vector".to_string(), b)])
                .unwrap_or_default();
            (r.name.clone(), v)
        })
        .collect();
    bars(
        path,
        "index memory per vector (bytes, excluding full vectors)",
        "bytes per vector",
        &rows,
        false,
    )
}

/// Latency percentiles of each system at its operating point closest to (and at
/// least) recall@k 0.95 by id, or its best-recall point when none reaches it.
pub fn latency(report: &Report, k: usize, path: &Path) -> PlotResult {
    let rows: Vec<(String, Vec<(String, f64)>)> = report
        .runs
        .iter()
        .filter_map(|r| {
            let pt = point_near_recall(r, k, 0.95)?;
            let l = &pt.latency;
            Some((
                format!("{} [{}]", r.name, pt.label),
                vec![
                    ("p50 µs".to_string(), l.p50_us),
                    ("p95 µs".to_string(), l.p95_us),
                    ("p99 µs".to_string(), l.p99_us),
                    ("p99.9 µs".to_string(), l.p999_us),
                ],
            ))
        })
        .collect();
    bars(
        path,
        "latency at recall@10 ≥ 0.95 (one query at a time, µs)",
        "microseconds",
        &rows,
        false,
    )
}

/// One line of [`lines`]: its legend name, its (x, y) points, and whether it
/// is drawn dashed.
pub type Series = (String, Vec<(f64, f64)>, bool);

/// One line per series over the x values (runbook steps): `series` holds
/// (name, points, dashed); the y axis is logarithmic when `log_y`. Nothing is
/// drawn when no series has a point.
pub fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log_y: bool,
    path: &Path,
) -> PlotResult {
    let pts = series.iter().flat_map(|(_, p, _)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        return Ok(());
    }
    let (x0, x1) = (x0 - 0.5, x1 + 0.5);
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .draw()?;
            for (i, (name, p, dashed)) in series.iter().enumerate() {
                let c = color(i);
                let style = c.stroke_width(2);
                if *dashed {
                    chart
                        .draw_series(DashedLineSeries::new(p.iter().copied(), 6, 4, style))?
                        .label(name.clone())
                        .legend(move |(x, y)| {
                            DashedPathElement::new(vec![(x, y), (x + 18, y)], 4, 3, style)
                        });
                } else {
                    chart
                        .draw_series(LineSeries::new(p.iter().copied(), style))?
                        .label(name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
                }
                chart.draw_series(p.iter().map(|&q| Circle::new(q, 3, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }};
    }
    if log_y {
        let (lo, hi) = (y0.max(1e-9) / 1.5, y1.max(1e-9) * 1.5);
        draw!(builder.build_cartesian_2d(x0..x1, (lo..hi).log_scale())?);
    } else {
        let pad = ((y1 - y0) * 0.08).max(0.005);
        draw!(builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad).min(1.0 + pad))?);
    }
    root.present()?;
    Ok(())
}
