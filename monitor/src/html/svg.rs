//! Inline SVG charts for the HTML report: columns (a time axis), rows (labelled horizontal
//! bars, with an optional marker such as a maximum) and a three-column graph (callers →
//! subject → destinations). Each chart is an `<svg>` carrying `data-chart`, each bar a
//! `<rect class="bar">` with a `<title>` (the browser's tooltip); labels are escaped here, so
//! callers pass raw strings.

use std::fmt::Write as _;

use super::{clip, esc, thousands};

/// Width of every chart (the viewBox; CSS scales it to the page).
const WIDTH: f64 = 960.0;

/// A vertical bar chart over ordered slots (days, hours): one slot per entry, a bar for each
/// non-zero value, a label under every `label_every`th slot.
pub fn columns(chart: &str, slots: &[(String, u64)], label_every: usize) -> String {
    let (left, bottom, top, height) = (56.0, 34.0, 14.0, 200.0);
    let max = slots.iter().map(|s| s.1).max().unwrap_or(0);
    let n = slots.len().max(1) as f64;
    let slot = (WIDTH - left - 8.0) / n;
    let plot = height - bottom - top;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg data-chart="{}" viewBox="0 0 {WIDTH} {height}" role="img" xmlns="http://www.w3.org/2000/svg">"#,
        esc(chart)
    );
    // Axis, and gridlines at the maximum and half of it.
    for (frac, text) in [(1.0, max), (0.5, max / 2)] {
        if max == 0 || (frac < 1.0 && text == 0) {
            continue;
        }
        let y = top + plot * (1.0 - (text as f64 / max as f64));
        let _ = write!(
            s,
            r#"<line class="grid" x1="{left}" x2="{WIDTH}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            thousands(text)
        );
    }
    let base = top + plot;
    let _ = write!(
        s,
        r#"<line class="axis-line" x1="{left}" x2="{WIDTH}" y1="{base}" y2="{base}"/>"#
    );
    for (i, (label, v)) in slots.iter().enumerate() {
        let x = left + slot * i as f64;
        if *v > 0 && max > 0 {
            let h = (plot * (*v as f64 / max as f64)).max(1.5);
            let _ = write!(
                s,
                r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}"><title>{}: {}</title></rect>"#,
                x + slot * 0.15,
                base - h,
                slot * 0.7,
                esc(label),
                thousands(*v)
            );
        }
        if label_every > 0 && i % label_every == 0 {
            let _ = write!(
                s,
                r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + slot / 2.0,
                base + 16.0,
                esc(&clip(label, 12))
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// One row of [`rows`].
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The label (raw: escaped when drawn).
    pub label: String,
    /// The bar's length, against the chart's largest value or marker.
    pub value: f64,
    /// The text after the bar.
    pub text: String,
    /// Drawn in the highlight colour (the report's subject).
    pub highlight: bool,
    /// A marker (e.g. the maximum) on the same scale as `value`.
    pub mark: Option<f64>,
}

/// A horizontal bar chart, one labelled row per entry.
pub fn rows(chart: &str, rows: &[Row]) -> String {
    let (label_w, row_h, text_w) = (310.0, 24.0, 260.0);
    let bar_w = WIDTH - label_w - text_w;
    let scale = rows
        .iter()
        .flat_map(|r| [r.value, r.mark.unwrap_or(0.0)])
        .fold(0.0, f64::max);
    let height = row_h * rows.len().max(1) as f64 + 6.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg data-chart="{}" viewBox="0 0 {WIDTH} {height}" role="img" xmlns="http://www.w3.org/2000/svg">"#,
        esc(chart)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = row_h * i as f64 + 3.0;
        let _ = write!(
            s,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}<title>{}</title></text>"#,
            label_w - 8.0,
            y + 15.0,
            esc(&clip(&r.label, 44)),
            esc(&r.label)
        );
        let w = if scale > 0.0 {
            (bar_w * r.value / scale).max(if r.value > 0.0 { 1.5 } else { 0.0 })
        } else {
            0.0
        };
        if r.value > 0.0 {
            let _ = write!(
                s,
                r#"<rect class="bar{}" x="{label_w}" y="{:.1}" width="{w:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
                if r.highlight { " subject" } else { "" },
                y + 2.0,
                row_h - 6.0,
                esc(&r.label),
                esc(&r.text)
            );
        }
        if let Some(m) = r.mark.filter(|_| scale > 0.0) {
            let x = label_w + bar_w * m / scale;
            let _ = write!(
                s,
                r#"<line class="mark" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}"/>"#,
                y,
                y + row_h - 2.0
            );
        }
        let _ = write!(
            s,
            r#"<text class="value" x="{:.1}" y="{:.1}">{}</text>"#,
            label_w + bar_w + 8.0,
            y + 15.0,
            esc(&r.text)
        );
    }
    s.push_str("</svg>");
    s
}

/// Nodes shown per side of [`graph`]; the rest are summed into one.
const GRAPH_NODES: usize = 12;

/// Callers → subject → destinations: boxes in three columns, edges as curves whose width
/// follows the count.
pub fn graph(
    chart: &str,
    sources: &[(String, u64)],
    subject: &str,
    dests: &[(String, u64)],
) -> String {
    let (side_w, mid_w, box_h, gap) = (300.0, 240.0, 26.0, 34.0);
    let side = |items: &[(String, u64)]| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = items.iter().take(GRAPH_NODES).cloned().collect();
        let rest: u64 = items.iter().skip(GRAPH_NODES).map(|i| i.1).sum();
        if items.len() > GRAPH_NODES {
            v.push((format!("{} more", items.len() - GRAPH_NODES), rest));
        }
        v
    };
    let (left, right) = (side(sources), side(dests));
    let n = left.len().max(right.len()).max(1) as f64;
    let height = n * gap + 20.0;
    let max = left
        .iter()
        .chain(&right)
        .map(|i| i.1)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mid_y = height / 2.0;
    let (lx, mx, rx) = (4.0, (WIDTH - mid_w) / 2.0, WIDTH - side_w - 4.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg data-chart="{}" viewBox="0 0 {WIDTH} {height}" role="img" xmlns="http://www.w3.org/2000/svg">"#,
        esc(chart)
    );
    let ys = |count: usize| -> Vec<f64> {
        let top = mid_y - (count as f64 * gap) / 2.0 + (gap - box_h) / 2.0;
        (0..count).map(|i| top + gap * i as f64).collect()
    };
    let edge = |s: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, count: u64, label: &str| {
        let w = 1.0 + 7.0 * count as f64 / max;
        let cx = (x1 + x2) / 2.0;
        let _ = write!(
            s,
            r#"<path class="edge" d="M{x1:.1},{y1:.1} C{cx:.1},{y1:.1} {cx:.1},{y2:.1} {x2:.1},{y2:.1}" stroke-width="{w:.1}"><title>{}: {}</title></path>"#,
            esc(label),
            thousands(count)
        );
    };
    for ((label, count), y) in left.iter().zip(ys(left.len())) {
        edge(
            &mut s,
            lx + side_w,
            y + box_h / 2.0,
            mx,
            mid_y,
            *count,
            label,
        );
    }
    for ((label, count), y) in right.iter().zip(ys(right.len())) {
        edge(
            &mut s,
            mx + mid_w,
            mid_y,
            rx,
            y + box_h / 2.0,
            *count,
            label,
        );
    }
    let node = |s: &mut String, x: f64, y: f64, label: &str, count: Option<u64>, class: &str| {
        let (text, w) = match count {
            Some(c) => (format!("{} ({})", clip(label, 36), thousands(c)), side_w),
            None => (clip(label, 32), mid_w),
        };
        let _ = write!(
            s,
            r#"<g class="{class}"><rect x="{x:.1}" y="{y:.1}" width="{w}" height="{box_h}" rx="4"/><text x="{:.1}" y="{:.1}">{}<title>{}</title></text></g>"#,
            x + 8.0,
            y + 17.0,
            esc(&text),
            esc(label)
        );
    };
    for ((label, count), y) in left.iter().zip(ys(left.len())) {
        node(&mut s, lx, y, label, Some(*count), "node source");
    }
    node(
        &mut s,
        mx,
        mid_y - box_h / 2.0,
        subject,
        None,
        "node subject",
    );
    for ((label, count), y) in right.iter().zip(ys(right.len())) {
        node(&mut s, rx, y, label, Some(*count), "node destination");
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(svg: &str, what: &str) -> usize {
        svg.matches(what).count()
    }

    #[test]
    fn columns_draw_a_bar_per_non_zero_slot() {
        let slots: Vec<(String, u64)> = (0..24)
            .map(|h| (format!("{h:02}"), if h == 14 { 3 } else { 0 }))
            .collect();
        let svg = columns("hours", &slots, 2);
        assert_eq!(count(&svg, r#"<rect class="bar""#), 1);
        assert_eq!(count(&svg, r#"<text class="axis" x"#), 12 + 2, "{svg}");
        assert!(svg.contains("<title>14: 3</title>"));
    }

    #[test]
    fn rows_escape_labels_and_mark_the_subject() {
        let svg = rows(
            "r",
            &[
                Row {
                    label: "/x<script>alert(1)</script>".into(),
                    value: 3.0,
                    text: "3".into(),
                    highlight: true,
                    mark: Some(4.0),
                },
                Row {
                    label: "b".into(),
                    value: 0.0,
                    text: "0".into(),
                    ..Row::default()
                },
            ],
        );
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(count(&svg, r#"class="bar subject""#), 1);
        assert_eq!(count(&svg, r#"<rect class="bar"#), 1, "no bar for 0");
        assert_eq!(count(&svg, r#"class="mark""#), 1);
    }

    #[test]
    fn the_graph_sums_the_nodes_it_cannot_show() {
        let many: Vec<(String, u64)> = (0..20).map(|i| (format!("pod-{i}"), 1)).collect();
        let svg = graph("g", &many, "path /x", &[("ns/svc".into(), 20)]);
        assert_eq!(count(&svg, r#"<g class="node source""#), GRAPH_NODES + 1);
        assert!(svg.contains("8 more (8)"), "{svg}");
        assert_eq!(count(&svg, r#"<path class="edge""#), GRAPH_NODES + 2);
    }
}
