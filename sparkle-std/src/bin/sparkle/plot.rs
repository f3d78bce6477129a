//! `--plot FILE.svg`: GFLOPS per shape (or layer) per implementation as grouped bars, with the
//! measured FMA peak drawn across as the roof.

use plotters::prelude::*;

use crate::Failure;

/// Draws `cells` (key, implementation, GFLOPS) to an SVG file.
pub fn bars(
    path: &std::path::Path,
    title: &str,
    cells: &[(String, &str, f64)],
    peak: Option<f64>,
) -> Result<(), Failure> {
    let (keys, impls) = sparkle_std::bench::keys_and_impls(cells);
    let top = cells.iter().map(|c| c.2).chain(peak).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (160 + 110 * keys.len() as u32, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..keys.len() as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("GFLOPS")
        .x_labels(keys.len().max(1))
        .x_label_formatter(&|x| keys.get(x.floor() as usize).map_or(String::new(), |k| k.to_string()))
        .draw()?;
    let width = 0.8 / impls.len().max(1) as f64;
    for (ii, imp) in impls.iter().enumerate() {
        let color = Palette99::pick(ii).to_rgba();
        let series: Vec<Rectangle<(f64, f64)>> = cells
            .iter()
            .filter(|c| c.1 == *imp)
            .filter_map(|c| keys.iter().position(|k| *k == c.0).map(|ki| (ki, c.2)))
            .map(|(ki, v)| {
                let x0 = ki as f64 + 0.1 + ii as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
            })
            .collect();
        chart
            .draw_series(series)?
            .label(*imp)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    if let Some(p) = peak {
        chart
            .draw_series(LineSeries::new([(0.0, p), (keys.len() as f64, p)], RED.stroke_width(2)))?
            .label(format!("measured FMA peak {p:.0}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
