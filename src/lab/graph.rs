//! A topology as a picture: Graphviz DOT, Mermaid, or SVG laid out here
//! (force-directed, deterministic), for `clonet graph`. Sans-IO.
use std::fmt::Write as _;

use super::topology::Topology;
use crate::vocab::impair::{LinkImpairment, LossModel, Params};
use crate::vocab::NodeKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Dot,
    Mermaid,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "svg" => Ok(Format::Svg),
            "dot" => Ok(Format::Dot),
            "mermaid" => Ok(Format::Mermaid),
            _ => Err(format!("unknown format {s:?} (svg, dot or mermaid)")),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Node(NodeKind),
    Lan,
}

#[derive(Clone, Debug)]
struct Vertex {
    name: String,
    shape: Shape,
    running: bool,
}

#[derive(Clone, Debug)]
struct Edge {
    a: usize,
    b: usize,
    name: String,
    up: bool,
    label: String,
}

/// Vertices (nodes, then LANs) and edges (links, LAN ports, links between LANs).
fn elements(t: &Topology) -> (Vec<Vertex>, Vec<Edge>) {
    let mut vertices: Vec<Vertex> = t
        .order
        .iter()
        .filter_map(|n| t.nodes.get(n))
        .map(|n| Vertex { name: n.name.clone(), shape: Shape::Node(n.kind), running: n.running })
        .collect();
    vertices.extend(t.lans.keys().map(|l| Vertex { name: l.clone(), shape: Shape::Lan, running: true }));
    let index = |name: &str, lan: bool| vertices.iter().position(|v| v.name == name && (v.shape == Shape::Lan) == lan);
    let mut edges = Vec::new();
    for l in t.links.values() {
        if let (Some(a), Some(b)) = (index(&l.a.node, false), index(&l.b.node, false)) {
            edges.push(Edge { a, b, name: l.name.clone(), up: l.up, label: impairment_label(&l.impair) });
        }
    }
    for lan in t.lans.values() {
        for m in &lan.members {
            let impair =
                t.nodes.get(&m.node).and_then(|n| n.iface(&m.iface)).map(|i| i.impair.clone()).unwrap_or_default();
            if let (Some(a), Some(b)) = (index(&m.node, false), index(&lan.name, true)) {
                edges.push(Edge { a, b, name: m.to_string(), up: true, label: impairment_label(&impair) });
            }
        }
    }
    for u in t.uplinks.values() {
        if let (Some(a), Some(b)) = (index(&u.a, true), index(&u.b, true)) {
            edges.push(Edge { a, b, name: u.name.clone(), up: u.up, label: impairment_label(&u.impair) });
        }
    }
    (vertices, edges)
}

fn direction_label(p: &Params) -> String {
    let ms = |d: crate::vocab::Delay| d.get().as_secs_f64() * 1000.0;
    let mut parts = Vec::new();
    if !p.delay.is_zero() {
        let jitter = if p.jitter.is_zero() { String::new() } else { format!(" ±{}", trim(ms(p.jitter))) };
        parts.push(format!("{} ms{jitter}", trim(ms(p.delay))));
    }
    match p.loss {
        LossModel::None => {}
        LossModel::Random { p, .. } => parts.push(format!("{}% loss", trim(p.get() * 100.0))),
        LossModel::Gilbert { .. } => parts.push("Gilbert loss".into()),
    }
    if !p.duplicate.is_zero() {
        parts.push(format!("{}% dup", trim(p.duplicate.get() * 100.0)));
    }
    if !p.corrupt.is_zero() {
        parts.push(format!("{}% corrupt", trim(p.corrupt.get() * 100.0)));
    }
    if let Some(rate) = p.rate {
        parts.push(match rate.get() {
            r if r >= 1_000_000_000 => format!("{} Gbit/s", trim(r as f64 / 1e9)),
            r if r >= 1_000_000 => format!("{} Mbit/s", trim(r as f64 / 1e6)),
            r => format!("{} kbit/s", trim(r as f64 / 1e3)),
        });
    }
    parts.join(", ")
}

/// `12.5`, `20`: at most two decimals, no trailing zeros.
fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// "20 ms, 1% loss" when both directions agree, else "→ … | ← …".
pub fn impairment_label(imp: &LinkImpairment) -> String {
    let (ab, ba) = (direction_label(&imp.a_to_b), direction_label(&imp.b_to_a));
    if ab == ba {
        return ab;
    }
    [(!ab.is_empty()).then(|| format!("→ {ab}")), (!ba.is_empty()).then(|| format!("← {ba}"))]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Positions for `n` vertices joined by `edges` (index pairs): a fixed
/// number of force-directed steps from points on a circle, so the same
/// topology always gives the same picture.
pub fn layout(n: usize, edges: &[(usize, usize)]) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let a = std::f64::consts::TAU * i as f64 / n.max(1) as f64;
            (200.0 * a.cos(), 200.0 * a.sin())
        })
        .collect();
    let rest = 120.0;
    for step in 0..400 {
        let cool = 1.0 - step as f64 / 400.0;
        let mut f = vec![(0.0f64, 0.0f64); n];
        for i in 0..n {
            // A little gravity keeps parts that are not connected together.
            f[i].0 -= p[i].0 * 0.05;
            f[i].1 -= p[i].1 * 0.05;
            for j in 0..n {
                if i != j {
                    let (dx, dy) = (p[i].0 - p[j].0, p[i].1 - p[j].1);
                    let d = dx.hypot(dy).max(1.0);
                    f[i].0 += dx / d * rest * rest / d;
                    f[i].1 += dy / d * rest * rest / d;
                }
            }
        }
        for &(a, b) in edges {
            let (dx, dy) = (p[b].0 - p[a].0, p[b].1 - p[a].1);
            let d = dx.hypot(dy).max(1.0);
            // Fruchterman-Reingold: attraction d²/k against repulsion k²/d.
            let pull = d * d / rest;
            f[a].0 += dx / d * pull;
            f[a].1 += dy / d * pull;
            f[b].0 -= dx / d * pull;
            f[b].1 -= dy / d * pull;
        }
        for i in 0..n {
            let len = f[i].0.hypot(f[i].1).max(1e-9);
            let step_len = len.min(40.0 * cool + 0.5);
            p[i].0 += f[i].0 / len * step_len;
            p[i].1 += f[i].1 / len * step_len;
        }
    }
    p
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn svg(t: &Topology) -> String {
    let (vertices, edges) = elements(t);
    let pairs: Vec<(usize, usize)> = edges.iter().map(|e| (e.a, e.b)).collect();
    let pos = layout(vertices.len(), &pairs);
    let margin = 60.0;
    let (minx, miny) = pos.iter().fold((0.0f64, 0.0f64), |m, p| (m.0.min(p.0), m.1.min(p.1)));
    let (maxx, maxy) = pos.iter().fold((0.0f64, 0.0f64), |m, p| (m.0.max(p.0), m.1.max(p.1)));
    let (w, h) = (maxx - minx + 2.0 * margin, maxy - miny + 2.0 * margin + 20.0);
    let at = |i: usize| (pos[i].0 - minx + margin, pos[i].1 - miny + margin + 20.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\">\n<title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        xml(&t.lab),
        xml(&t.lab)
    );
    for e in &edges {
        let ((x1, y1), (x2, y2)) = (at(e.a), at(e.b));
        let (color, dash) = if !e.up {
            ("#c0392b", " stroke-dasharray=\"6 5\"")
        } else if !e.label.is_empty() {
            ("#8e44ad", "")
        } else {
            ("#56607a", "")
        };
        let _ = writeln!(
            out,
            "<g class=\"edge\" data-link=\"{}\"><line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{color}\" stroke-width=\"2.5\"{dash}/>",
            xml(&e.name)
        );
        let mut label = e.label.clone();
        if !e.up {
            label = if label.is_empty() { "down".into() } else { format!("{label} · down") };
        }
        if !label.is_empty() {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{color}\" text-anchor=\"middle\">{}</text>",
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0 - 6.0,
                xml(&label)
            );
        }
        out.push_str("</g>\n");
    }
    for (i, v) in vertices.iter().enumerate() {
        let (x, y) = at(i);
        let (fill, stroke) = match (&v.shape, v.running) {
            (_, false) => ("#eeeeee", "#999999"),
            (Shape::Lan, _) => ("#fff6d6", "#b08a00"),
            (Shape::Node(NodeKind::Ns), _) => ("#d9e8ff", "#2f6fd6"),
            (Shape::Node(NodeKind::Uml), _) => ("#dff5e1", "#2e9a44"),
            (Shape::Node(NodeKind::Kvm), _) => ("#fbe3cf", "#d07020"),
            (Shape::Node(NodeKind::Nat), _) => ("#f0e0ff", "#8040c0"),
            (Shape::Node(NodeKind::Host), _) => ("#e8e8e8", "#404040"),
            (Shape::Node(NodeKind::Plug), _) => ("#dcf2f2", "#208080"),
            (Shape::Node(NodeKind::Vxlan), _) => ("#fff3c4", "#a08000"),
        };
        let style = format!("fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"2\"");
        let (shape, data, label_y) = match &v.shape {
            Shape::Lan => (
                format!("<rect x=\"-26\" y=\"-12\" width=\"52\" height=\"24\" rx=\"4\" {style}/>"),
                format!("data-lan=\"{}\"", xml(&v.name)),
                4,
            ),
            Shape::Node(k) => (
                match k {
                    NodeKind::Ns => format!("<circle r=\"20\" {style}/>"),
                    NodeKind::Uml => format!("<rect x=\"-19\" y=\"-19\" width=\"38\" height=\"38\" rx=\"8\" {style}/>"),
                    NodeKind::Kvm => format!("<polygon points=\"-20,0 -10,-18 10,-18 20,0 10,18 -10,18\" {style}/>"),
                    // A cloud-like diamond: the way out.
                    NodeKind::Nat => format!("<polygon points=\"0,-22 22,0 0,22 -22,0\" {style}/>"),
                    // A house: the host.
                    NodeKind::Host => format!("<polygon points=\"0,-22 20,-6 20,18 -20,18 -20,-6\" {style}/>"),
                    // A socket's face, wider at the top: where programs plug in.
                    NodeKind::Plug => format!("<polygon points=\"-22,-16 22,-16 13,18 -13,18\" {style}/>"),
                    // A pipe's mouth: a tunnel to elsewhere.
                    NodeKind::Vxlan => format!("<ellipse rx=\"24\" ry=\"14\" {style}/>"),
                },
                format!("data-node=\"{}\" data-kind=\"{k}\"", xml(&v.name)),
                34,
            ),
        };
        let _ = writeln!(
            out,
            "<g class=\"vertex\" {data} transform=\"translate({x:.1},{y:.1})\">{shape}<text y=\"{label_y}\" font-size=\"12\" text-anchor=\"middle\">{}</text></g>",
            xml(&v.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot(t: &Topology) -> String {
    let (vertices, edges) = elements(t);
    let mut out = format!(
        "graph {} {{\n  node [fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\", fontsize=10];\n",
        quoted(&t.lab)
    );
    for v in &vertices {
        let shape = match v.shape {
            Shape::Lan => "box",
            Shape::Node(NodeKind::Ns) => "circle",
            Shape::Node(NodeKind::Uml) => "box, style=rounded",
            Shape::Node(NodeKind::Kvm) => "hexagon",
            Shape::Node(NodeKind::Nat) => "diamond",
            Shape::Node(NodeKind::Host) => "house",
            Shape::Node(NodeKind::Plug) => "invtrapezium",
            Shape::Node(NodeKind::Vxlan) => "cds",
        };
        let dim = if v.running { "" } else { ", color=gray" };
        let _ = writeln!(out, "  {} [shape={shape}{dim}];", quoted(&v.name));
    }
    for e in &edges {
        let mut attrs = vec![format!("tooltip={}", quoted(&e.name))];
        if !e.label.is_empty() {
            attrs.push(format!("label={}", quoted(&e.label)));
        }
        if !e.up {
            attrs.push("style=dashed, color=red".into());
        }
        let _ = writeln!(
            out,
            "  {} -- {} [{}];",
            quoted(&vertices[e.a].name),
            quoted(&vertices[e.b].name),
            attrs.join(", ")
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid(t: &Topology) -> String {
    let (vertices, edges) = elements(t);
    // Mermaid ids are plain words: v0, v1… with the names as labels.
    let label = |s: &str| format!("\"{}\"", s.replace('"', "#quot;"));
    let mut out = String::from("graph LR\n");
    for (i, v) in vertices.iter().enumerate() {
        let l = label(&v.name);
        let shape = match v.shape {
            Shape::Lan => format!("[{l}]"),
            Shape::Node(NodeKind::Ns) => format!("(({l}))"),
            Shape::Node(NodeKind::Uml) => format!("({l})"),
            Shape::Node(NodeKind::Kvm) => format!("{{{{{l}}}}}"),
            Shape::Node(NodeKind::Nat) => format!("{{{l}}}"),
            Shape::Node(NodeKind::Host) => format!("[/{l}\\]"),
            Shape::Node(NodeKind::Plug) => format!("[\\{l}/]"),
            Shape::Node(NodeKind::Vxlan) => format!(">{l}]"),
        };
        let _ = writeln!(out, "  v{i}{shape}");
    }
    for e in &edges {
        let link = if e.up { "---" } else { "-.-" };
        let text = match (e.label.is_empty(), e.up) {
            (true, true) => String::new(),
            (true, false) => "|down|".into(),
            (false, up) => format!("|{}|", label(&if up { e.label.clone() } else { format!("{} · down", e.label) })),
        };
        let _ = writeln!(out, "  v{} {link}{text} v{}", e.a, e.b);
    }
    out
}

/// The topology in `format`.
pub fn render(t: &Topology, format: Format) -> String {
    match format {
        Format::Svg => svg(t),
        Format::Dot => dot(t),
        Format::Mermaid => mermaid(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::units::test_values::p as prob;

    fn lab() -> Topology {
        let mut t = Topology::new("demo");
        t.add_node("a", NodeKind::Ns).unwrap();
        t.add_node("r", NodeKind::Uml).unwrap();
        t.add_lan("sw").unwrap();
        let x = t.plan_iface("a", None, None, crate::vocab::Mtu::ETHERNET).unwrap();
        let y = t.plan_iface("r", None, None, crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_link("a--r", ("a", x), ("r", y)).unwrap();
        let l = t.links.get_mut("a--r").unwrap();
        l.up = false;
        l.impair.a_to_b.delay = crate::vocab::Delay::from_millis(20).unwrap();
        l.impair.b_to_a.delay = crate::vocab::Delay::from_millis(20).unwrap();
        l.impair.b_to_a.loss = LossModel::Random { p: prob(0.01), correlation: prob(0.0) };
        let z = t.plan_iface("r", None, None, crate::vocab::Mtu::ETHERNET).unwrap();
        t.add_lan_member("sw", "r", z, Default::default()).unwrap();
        t
    }

    #[test]
    fn labels_say_what_each_direction_suffers() {
        let t = lab();
        assert_eq!(impairment_label(&t.links["a--r"].impair), "→ 20 ms | ← 20 ms, 1% loss");
        assert_eq!(impairment_label(&LinkImpairment::default()), "");
        assert_eq!(trim(12.5), "12.5");
        assert_eq!(trim(20.0), "20");
    }

    #[test]
    fn dot_and_mermaid_show_shapes_links_and_down_state() {
        let t = lab();
        let d = render(&t, Format::Dot);
        assert!(d.starts_with("graph \"demo\" {"), "{d}");
        assert!(d.contains("\"a\" [shape=circle];") && d.contains("\"r\" [shape=box, style=rounded];"), "{d}");
        assert!(d.contains("\"sw\" [shape=box];"), "{d}");
        assert!(
            d.contains(
                "\"a\" -- \"r\" [tooltip=\"a--r\", label=\"→ 20 ms | ← 20 ms, 1% loss\", style=dashed, color=red];"
            ),
            "{d}"
        );
        assert!(d.contains("\"r\" -- \"sw\" [tooltip=\"r:eth1\"];"), "{d}");
        let m = render(&t, Format::Mermaid);
        assert!(m.starts_with("graph LR\n  v0((\"a\"))\n  v1(\"r\")\n  v2[\"sw\"]\n"), "{m}");
        assert!(m.contains("v0 -.-|\"→ 20 ms | ← 20 ms, 1% loss · down\"| v1"), "{m}");
        assert!(m.contains("v1 --- v2"), "{m}");
    }

    #[test]
    fn svg_is_well_formed_deterministic_and_spreads_vertices() {
        let t = lab();
        let s = render(&t, Format::Svg);
        assert_eq!(s, render(&t, Format::Svg), "the same lab, the same picture");
        assert!(s.contains("data-node=\"a\" data-kind=\"ns\"") && s.contains("data-lan=\"sw\""), "{s}");
        assert!(s.contains("stroke-dasharray"), "the down link is dashed");
        assert_eq!(s.matches("<g ").count(), s.matches("</g>").count());
        let p = layout(4, &[(0, 1), (1, 2), (2, 3)]);
        for i in 0..4 {
            for j in 0..i {
                let d = (p[i].0 - p[j].0).hypot(p[i].1 - p[j].1);
                assert!(d > 40.0, "vertices {i} and {j} overlap: {d}");
            }
        }
        let (d01, d03) = ((p[0].0 - p[1].0).hypot(p[0].1 - p[1].1), (p[0].0 - p[3].0).hypot(p[0].1 - p[3].1));
        assert!(d01 < d03, "neighbours closer than the ends of the chain: {d01} vs {d03}");
    }
}
