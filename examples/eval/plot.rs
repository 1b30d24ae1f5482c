//! The PNGs of docs/EVALUATION.md, drawn from the runner's CSVs with plotters (bitmap backend; text
//! by ab_glyph from a TrueType font read at run time: `EVAL_FONT`, else DejaVu Sans or Liberation
//! Sans where Linux distributions put them) and encoded by png. A CSV that is missing is skipped.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

const FONT: &str = "sans-serif";
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The paper's Table II (ToN 2003: N = 1000, r = 20), p = 0.1 … 0.5: mean path length and mean
/// timeouts per lookup. Quoted from memory, not checked against the PDF (docs/EVALUATION.md).
const PAPER_FAILURE_PATH: [f64; 5] = [4.03, 4.22, 4.44, 4.69, 5.09];
const PAPER_FAILURE_TIMEOUTS: [f64; 5] = [0.60, 1.17, 2.02, 3.23, 5.10];
/// The paper's Fig. 8 (N = 10^4, 5·10^5 keys): 99th percentile and maximum of keys per node, as
/// multiples of the mean (50), as quoted in docs/EVALUATION.md.
const PAPER_LOAD_P99_OVER_MEAN: f64 = 4.6;
const PAPER_LOAD_MAX_OVER_MEAN: f64 = 9.1;

const OURS: RGBColor = RGBColor(31, 119, 180);
const OTHER: RGBColor = RGBColor(255, 127, 14);
const PAPER: RGBColor = RGBColor(120, 120, 120);
const GREEN: RGBColor = RGBColor(44, 160, 44);

/// Every plot whose CSV is in `dir`, written next to it.
pub fn all(dir: &Path) -> Result {
    register_font()?;
    type Plot = fn(&Path) -> Result;
    let plots: [(&str, Plot); 6] = [
        ("path", path),
        ("failures", failures),
        ("failures_silent", failures_silent),
        ("churn", churn),
        ("load", load),
        ("wan_latencies", wan),
    ];
    for (csv, plot) in plots {
        if dir.join(format!("{csv}.csv")).exists() {
            plot(dir)?;
        } else {
            eprintln!("plot: no {csv}.csv in {}: skipped", dir.display());
        }
    }
    Ok(())
}

fn register_font() -> Result {
    let from_env = std::env::var("EVAL_FONT").ok();
    let path = from_env
        .iter()
        .map(String::as_str)
        .chain(FONT_PATHS)
        .find(|p| Path::new(p).exists())
        .ok_or("no TrueType font found: set EVAL_FONT to a .ttf file")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| format!("{path}: not a font plotters can read"))?;
    Ok(())
}

/// Draws with `draw` on a white `w`×`h` canvas and writes it to `file` as PNG.
fn render(file: &Path, (w, h): (u32, u32), draw: impl FnOnce(&Area) -> Result) -> Result {
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    let mut encoder = png::Encoder::new(std::fs::File::create(file)?, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Best);
    encoder.write_header()?.write_image_data(&rgb)?;
    eprintln!("plot: {}", file.display());
    Ok(())
}

/// A CSV the runner wrote: a header line, then rows of cells without commas or quotes.
struct Csv {
    columns: BTreeMap<String, usize>,
    rows: Vec<Vec<String>>,
}

impl Csv {
    fn read(file: &Path) -> Result<Csv> {
        let text = std::fs::read_to_string(file)?;
        let mut lines = text
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect());
        let header: Vec<String> = lines.next().ok_or("empty CSV")?;
        let columns = header
            .into_iter()
            .enumerate()
            .map(|(i, c)| (c, i))
            .collect();
        Ok(Csv {
            columns,
            rows: lines.collect(),
        })
    }

    /// Column `name` of the rows where `filter` holds, as numbers.
    fn f64s(&self, name: &str, filter: impl Fn(&Row) -> bool) -> Vec<f64> {
        self.rows()
            .filter(|r| filter(r))
            .map(|r| r.f64(name))
            .collect()
    }

    /// The sum of `names`' columns, per row where `filter` holds.
    fn sums(&self, names: &[&str], filter: impl Fn(&Row) -> bool) -> Vec<f64> {
        self.rows()
            .filter(|r| filter(r))
            .map(|r| names.iter().map(|name| r.f64(name)).sum())
            .collect()
    }

    fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|cells| Row { csv: self, cells })
    }
}

struct Row<'a> {
    csv: &'a Csv,
    cells: &'a [String],
}

impl Row<'_> {
    fn str(&self, name: &str) -> &str {
        &self.cells[self.csv.columns[name]]
    }

    fn f64(&self, name: &str) -> f64 {
        self.str(name).parse().unwrap_or(f64::NAN)
    }
}

/// An axis label: at most two decimals, no trailing zeros.
fn tick(v: &f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// A line with dots, labelled in the legend.
fn series<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, DB, CT>,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    label: &str,
) -> Result
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// path.png: mean path against N (log axis), full routing with its 1st–99th percentile range,
/// fingers only, and ½·log2 N.
fn path(dir: &Path) -> Result {
    let csv = Csv::read(&dir.join("path.csv"))?;
    let ns = csv.f64s("n", |r| r.str("routing") == "full");
    let n_max = max(&ns).max(16.0);
    render(&dir.join("path.png"), (800, 500), |root| {
        root.fill(&WHITE)?;
        let y_max = (max(&csv.f64s("p99", |_| true)) + 1.0).ceil();
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Lookup path length vs N (warm ring, 30 s periods, r = 20)",
                (FONT, 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(50)
            .build_cartesian_2d((6f64..n_max * 1.4).log_scale(), 0f64..y_max)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("N (nodes)")
            .y_desc("PEER FIND hops")
            .label_style((FONT, 14))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&tick)
            .draw()?;
        let full = |r: &Row| r.str("routing") == "full";
        let (p1, p99) = (csv.f64s("p1", full), csv.f64s("p99", full));
        chart.draw_series(ns.iter().zip(p1.iter().zip(&p99)).map(|(&n, (&lo, &hi))| {
            PathElement::new(vec![(n, lo), (n, hi)], OURS.mix(0.5).stroke_width(2))
        }))?;
        let mean =
            |f: &dyn Fn(&Row) -> bool| csv.f64s("n", f).into_iter().zip(csv.f64s("mean_path", f));
        series(
            &mut chart,
            mean(&full).collect(),
            OURS,
            "ours, full routing (bars: 1st–99th pct)",
        )?;
        let fingers = |r: &Row| r.str("routing") == "fingers-only";
        series(
            &mut chart,
            mean(&fingers).collect(),
            OTHER,
            "ours, fingers only",
        )?;
        let half_log: Vec<(f64, f64)> = ns.iter().map(|&n| (n, 0.5 * n.log2())).collect();
        series(&mut chart, half_log, PAPER, "½·log2 N (the paper's mean)")?;
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// The columns whose sum stands for the paper's timeouts per lookup: each a failed send that
/// made the forwarder try another hop.
const TIMEOUTS: [&str; 2] = ["refused_per_lookup", "hop_timeouts_per_lookup"];

/// failures.png: against p, ours (each period setting) and the paper's Table II: lookups right
/// on the first attempt, mean path length, and timeouts per lookup (ours: refused sends and hop
/// timeouts, estimated).
fn failures(dir: &Path) -> Result {
    failures_as(dir, "failures", "Refusals + hop timeouts per lookup")
}

/// failures_silent.png: the same with silent failures (hop timeouts alone, in effect).
fn failures_silent(dir: &Path) -> Result {
    failures_as(dir, "failures_silent", "Hop timeouts per lookup")
}

fn failures_as(dir: &Path, name: &str, timeouts_title: &str) -> Result {
    let csv = Csv::read(&dir.join(format!("{name}.csv")))?;
    let n = csv.rows().next().ok_or("empty CSV")?.str("n").to_string();
    render(&dir.join(format!("{name}.png")), (1200, 420), |root| {
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 3));
        let ps = [0.1, 0.2, 0.3, 0.4, 0.5];
        let paper_right: Vec<(f64, f64)> = ps.iter().map(|&p| (p, 100.0)).collect();
        let paper_path: Vec<(f64, f64)> = ps.iter().copied().zip(PAPER_FAILURE_PATH).collect();
        let paper_timeouts: Vec<(f64, f64)> =
            ps.iter().copied().zip(PAPER_FAILURE_TIMEOUTS).collect();
        use SeriesLabelPosition::{LowerRight, UpperLeft};
        let specs = [
            (
                "Right on the 1st attempt (%)",
                "first_right_pct",
                105.0,
                paper_right,
                LowerRight,
            ),
            (
                "Mean path length (hops)",
                "mean_path",
                7.0,
                paper_path,
                UpperLeft,
            ),
            (timeouts_title, "timeouts", 6.0, paper_timeouts, UpperLeft),
        ];
        for (area, (title, column, hi, paper, position)) in panels.iter().zip(specs) {
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(40)
                .build_cartesian_2d(0.05f64..0.55, 0.0..hi)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_labels(6)
                .x_desc(format!("fraction failed at once, p (N = {n}, r = 20)"))
                .label_style((FONT, 13))
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .draw()?;
            series(&mut chart, paper, PAPER, "paper, Table II")?;
            for (periods, color, label) in [
                ("ours", OURS, "ours, 1 s periods"),
                ("paper", OTHER, "ours, 30 s periods"),
            ] {
                let of = |r: &Row| r.str("periods") == periods;
                let values = match column {
                    "timeouts" => csv.sums(&TIMEOUTS, of),
                    _ => csv.f64s(column, of),
                };
                let points: Vec<(f64, f64)> = csv.f64s("p", of).into_iter().zip(values).collect();
                if !points.is_empty() {
                    series(&mut chart, points, color, label)?;
                }
            }
            legend(&mut chart, position)?;
        }
        Ok(())
    })
}

/// churn.png: against R, per period setting: lookups failed (unanswered or wrong, %) and mean path.
fn churn(dir: &Path) -> Result {
    let csv = Csv::read(&dir.join("churn.csv"))?;
    let n = csv.rows().next().ok_or("empty CSV")?.str("n").to_string();
    render(&dir.join("churn.png"), (1000, 420), |root| {
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 2));
        let fail_max = max(&csv.f64s("failed_pct", |_| true)).max(0.05) * 1.5;
        let specs = [
            ("Failed lookups (%)", "failed_pct", fail_max),
            ("Mean path length (hops)", "mean_path", 7.0),
        ];
        for (area, (title, column, hi)) in panels.iter().zip(specs) {
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(45)
                .build_cartesian_2d(0.0f64..0.45, 0.0..hi)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .x_desc(format!("joins + crashes per second, R (N = {n})"))
                .label_style((FONT, 13))
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .draw()?;
            for (periods, color, label) in [
                ("ours", OURS, "1 s stabilize, 250 ms fingers"),
                ("paper", OTHER, "30 s periods (the paper's)"),
            ] {
                let of = |r: &Row| r.str("periods") == periods;
                let points: Vec<(f64, f64)> = csv
                    .f64s("rate_per_s", of)
                    .into_iter()
                    .zip(csv.f64s(column, of))
                    .collect();
                if !points.is_empty() {
                    series(&mut chart, points, color, label)?;
                }
            }
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
        Ok(())
    })
}

/// load.png: keys per node, 1st and 99th percentiles and maximum, random placement and ours, with
/// the paper's 99th percentile and maximum.
fn load(dir: &Path) -> Result {
    let csv = Csv::read(&dir.join("load.csv"))?;
    let rows: Vec<Row> = csv.rows().collect();
    let mean = rows.first().ok_or("empty load.csv")?.f64("mean");
    // The paper's 1st percentile is not quoted: no bar.
    let paper = [
        f64::NAN,
        PAPER_LOAD_P99_OVER_MEAN * mean,
        PAPER_LOAD_MAX_OVER_MEAN * mean,
    ];
    let mut bars: Vec<(&str, RGBColor, [f64; 3])> = vec![("paper, Fig. 8", PAPER, paper)];
    for (row, color) in rows.iter().zip([OTHER, OURS]) {
        bars.push((
            row.str("placement"),
            color,
            [row.f64("p1"), row.f64("p99"), row.f64("max")],
        ));
    }
    let y_max = bars.iter().map(|b| b.2[2]).fold(0.0, f64::max) * 1.2;
    render(&dir.join("load.png"), (800, 480), |root| {
        root.fill(&WHITE)?;
        let title = format!(
            "Keys per node, N = {}, {} keys",
            rows[0].str("n"),
            rows[0].str("keys")
        );
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..3.0, 0f64..y_max)?;
        let names = ["1st percentile", "99th percentile", "maximum"];
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(7)
            .x_label_formatter(&|x| {
                let centre = (x - x.floor() - 0.5).abs() < 0.01;
                let name = names.get(x.floor() as usize).filter(|_| centre);
                name.unwrap_or(&"").to_string()
            })
            .y_label_formatter(&tick)
            .y_desc("keys per node")
            .label_style((FONT, 14))
            .draw()?;
        for (i, (label, color, values)) in bars.iter().enumerate() {
            let offset = 0.15 + 0.23 * i as f64;
            let color = *color;
            chart
                .draw_series(values.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(
                    |(k, &v)| {
                        let x = k as f64 + offset;
                        Rectangle::new([(x, 0.0), (x + 0.2, v)], color.filled())
                    },
                ))?
                .label(*label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled())
                });
        }
        let mean_line = vec![(0.0, mean), (3.0, mean)];
        chart
            .draw_series(LineSeries::new(mean_line, GREEN.stroke_width(1)))?
            .label(format!("mean ({mean:.0})"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// wan.png: the CDF of GET latency, one curve per N.
fn wan(dir: &Path) -> Result {
    let csv = Csv::read(&dir.join("wan_latencies.csv"))?;
    let mut by_n: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for row in csv.rows() {
        by_n.entry(row.f64("n") as u64)
            .or_default()
            .push(row.f64("latency_ms"));
    }
    let x_max = (max(&csv.f64s("latency_ms", |_| true)) / 100.0).ceil() * 100.0;
    render(&dir.join("wan.png"), (800, 480), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption("GET latency, one-way delays 10–100 ms per link", (FONT, 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..x_max, 0f64..1.0)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("ms from the client's GET to its answer")
            .y_desc("fraction of GETs")
            .label_style((FONT, 14))
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()?;
        for ((n, mut ms), color) in by_n.into_iter().zip([OURS, OTHER, GREEN, PAPER]) {
            ms.sort_by(f64::total_cmp);
            let count = ms.len() as f64;
            let cdf: Vec<(f64, f64)> = ms
                .iter()
                .enumerate()
                .map(|(i, &x)| (x, (i + 1) as f64 / count))
                .collect();
            chart
                .draw_series(LineSeries::new(cdf, color.stroke_width(2)))?
                .label(format!("N = {n} ({} GETs)", ms.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}
