//! Link impairment options as scripts write them (sans-IO): parsing an
//! option map into a [`LinkImpairment`], with a clear message for every
//! bad value, and rendering one back (for `:save` and `link.impairment`).
//!
//! Times are `"20ms"`-style strings (or plain numbers of milliseconds),
//! probabilities are percentages, rates are `"10mbit"`-style strings.
//! Top-level keys apply to both directions; `a_to_b` / `b_to_a` maps
//! override them for one direction.
//!
//! Owns: the option vocabulary. Must not touch: Rhai, the switch.
use crate::vocab::impair::{self, LinkImpairment, LossModel, Params};
use crate::vocab::{Delay, Probability, QueueLimit, VocabError};

/// One option value, independent of the script engine.
#[derive(Clone, Debug, PartialEq)]
pub enum OptValue {
    Text(String),
    Number(f64),
    Int(i64),
    Map(Vec<(String, OptValue)>),
}

/// Keys that set one direction's impairments.
pub const DIRECTION_KEYS: &[&str] = &[
    "delay",
    "jitter",
    "distribution",
    "loss",
    "loss_correlation",
    "loss_model",
    "duplicate",
    "reorder",
    "gap",
    "corrupt",
    "rate",
    "limit",
];
/// Keys of the whole link on top of those.
pub const LINK_KEYS: &[&str] = &["seed", "a_to_b", "b_to_a"];

pub fn is_impairment_key(key: &str) -> bool {
    DIRECTION_KEYS.contains(&key) || LINK_KEYS.contains(&key)
}

fn number(key: &str, v: &OptValue) -> Result<f64, String> {
    match v {
        OptValue::Number(n) if n.is_finite() => Ok(*n),
        OptValue::Int(i) => Ok(*i as f64),
        other => Err(format!("{key} must be a number, not {other:?}")),
    }
}

fn time(key: &'static str, v: &OptValue) -> Result<Delay, String> {
    match v {
        OptValue::Text(t) => impair::parse_time(key, t).map_err(|e| e.to_string()),
        _ => {
            let ms = number(key, v)?;
            if ms < 0.0 {
                return Err(format!("{key}: {ms} ms is negative"));
            }
            impair::millis(key, ms).map_err(|e| e.to_string())
        }
    }
}

fn percent(key: &'static str, v: &OptValue) -> Result<Probability, String> {
    Probability::percent(key, number(key, v)?).map_err(|e| e.to_string())
}

fn count(key: &str, v: &OptValue, min: i64) -> Result<i64, String> {
    match v {
        OptValue::Int(i) if *i >= min => Ok(*i),
        OptValue::Int(i) => Err(format!("{key}: {i} is out of range (at least {min})")),
        other => Err(format!("{key} must be an integer, not {other:?}")),
    }
}

fn gilbert(v: &OptValue) -> Result<LossModel, String> {
    let OptValue::Map(model) = v else { return Err("loss_model must be a map like #{gilbert: #{p: 5, r: 50}}".into()) };
    let [(kind, OptValue::Map(g))] = model.as_slice() else {
        return Err("loss_model must be a map like #{gilbert: #{p: 5, r: 50}}".into());
    };
    if kind != "gilbert" {
        return Err(format!("unknown loss_model {kind:?} (known: gilbert)"));
    }
    let (mut p, mut r, mut h, mut k) = (None, None, Probability::ZERO, Probability::ONE);
    for (key, value) in g {
        match key.as_str() {
            "p" => p = Some(percent("gilbert p", value)?),
            "r" => r = Some(percent("gilbert r", value)?),
            "h" => h = percent("gilbert h", value)?,
            "k" => k = percent("gilbert k", value)?,
            other => return Err(format!("unknown gilbert parameter {other:?} (known: p, r, h, k)")),
        }
    }
    let p = p.ok_or("gilbert needs p, the chance (%) of going from the good state to the bad one")?;
    let r = r.ok_or("gilbert needs r, the chance (%) of going from the bad state back to the good one")?;
    Ok(LossModel::Gilbert { p, r, h, k })
}

/// Applies direction keys of `opts` over `base`.
fn direction(base: &Params, opts: &[(String, OptValue)]) -> Result<Params, String> {
    let mut p = base.clone();
    let mut loss = None;
    let mut correlation = None;
    for (key, v) in opts {
        match key.as_str() {
            "delay" => p.delay = time("delay", v)?,
            "jitter" => p.jitter = time("jitter", v)?,
            "distribution" => match v {
                OptValue::Text(t) => p.distribution = t.parse().map_err(|e: VocabError| e.to_string())?,
                other => return Err(format!("distribution must be a string, not {other:?}")),
            },
            "loss" => loss = Some(percent("loss", v)?),
            "loss_correlation" => correlation = Some(percent("loss_correlation", v)?),
            "loss_model" => p.loss = gilbert(v)?,
            "duplicate" => p.duplicate = percent("duplicate", v)?,
            "reorder" => p.reorder = percent("reorder", v)?,
            "gap" => {
                p.gap =
                    u32::try_from(count(key, v, 0)?).map_err(|_| format!("{key}: out of range (0..={})", u32::MAX))?
            }
            "corrupt" => p.corrupt = percent("corrupt", v)?,
            "rate" => match v {
                OptValue::Text(t) => p.rate = Some(impair::parse_rate(t).map_err(|e| e.to_string())?),
                other => return Err(format!("rate must be a string like \"10mbit\", not {other:?}")),
            },
            "limit" => p.limit = QueueLimit::new(count(key, v, 1)?).map_err(|e| e.to_string())?,
            _ => {}
        }
    }
    match (loss, correlation, p.loss) {
        (Some(_), _, LossModel::Gilbert { .. }) if opts.iter().any(|(k, _)| k == "loss_model") => {
            return Err("give either loss or loss_model, not both".into())
        }
        (Some(l), c, _) => {
            p.loss = if l.is_zero() {
                LossModel::None
            } else {
                LossModel::Random { p: l, correlation: c.unwrap_or(Probability::ZERO) }
            }
        }
        (None, Some(c), LossModel::Random { p: l, .. }) => p.loss = LossModel::Random { p: l, correlation: c },
        (None, Some(_), _) => return Err("loss_correlation needs a loss".into()),
        (None, None, _) => {}
    }
    p.check().map_err(|e| match e {
        // The rule's own sentence is the message scripts have always seen.
        VocabError::Invalid { why, .. } => why,
        other => other.to_string(),
    })?;
    Ok(p)
}

/// Parses the impairment keys of an option map (other keys are left to
/// the caller). None when no impairment key is present.
pub fn parse(opts: &[(String, OptValue)]) -> Result<Option<LinkImpairment>, String> {
    if !opts.iter().any(|(k, _)| is_impairment_key(k)) {
        return Ok(None);
    }
    let both = direction(&Params::default(), opts)?;
    let mut imp = LinkImpairment { a_to_b: both.clone(), b_to_a: both.clone(), seed: None };
    let base = Params::default();
    for (key, v) in opts {
        match key.as_str() {
            "seed" => imp.seed = Some(count(key, v, 0)? as u64),
            "a_to_b" | "b_to_a" => {
                let OptValue::Map(m) = v else { return Err(format!("{key} must be a map of impairments")) };
                if let Some((bad, _)) = m.iter().find(|(k, _)| !DIRECTION_KEYS.contains(&k.as_str())) {
                    return Err(format!("{key}: unknown option {bad:?} (known: {})", DIRECTION_KEYS.join(", ")));
                }
                // Top-level keys first, then the direction's own.
                let mut merged: Vec<(String, OptValue)> =
                    opts.iter().filter(|(k, _)| DIRECTION_KEYS.contains(&k.as_str())).cloned().collect();
                merged.extend(m.iter().cloned());
                let d = direction(&base, &merged)?;
                if key == "a_to_b" {
                    imp.a_to_b = d;
                } else {
                    imp.b_to_a = d;
                }
            }
            _ => {}
        }
    }
    Ok(Some(imp))
}

/// `20ms`, `250us`, `1500ns`: the shortest exact spelling.
pub fn format_time(d: Delay) -> String {
    let ns = d.get().as_nanos();
    if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

pub fn format_rate(rate: crate::vocab::Rate) -> String {
    let bits = rate.get();
    for (unit, f) in [("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000)] {
        if bits.is_multiple_of(f) {
            return format!("{}{unit}", bits / f);
        }
    }
    format!("{bits}bit")
}

/// A probability as the percentage scripts write: the one with the
/// fewest digits that reads back (`Probability::percent`) as exactly `p`,
/// so that `:save` keeps every value a script can give; integers stay
/// integers. Some probabilities (from JSON) are no percentage divided by
/// 100: they get the nearest one.
fn pct(p: Probability) -> OptValue {
    let v = p.get() * 100.0;
    let reads_back = |x: f64| Probability::percent("", x).is_ok_and(|q| q == p);
    let near = [v, v.next_down(), v.next_up()];
    let shortest = (0..17usize)
        .flat_map(|decimals| near.map(|x| format!("{x:.decimals$e}")))
        .filter_map(|text| text.parse::<f64>().ok())
        .find(|x| reads_back(*x))
        .unwrap_or(v);
    if shortest.fract() == 0.0 {
        OptValue::Int(shortest as i64)
    } else {
        OptValue::Number(shortest)
    }
}

fn render_direction(p: &Params) -> Vec<(String, OptValue)> {
    let d = Params::default();
    let mut out = Vec::new();
    let mut put = |k: &str, v: OptValue| out.push((k.to_string(), v));
    if p.delay != d.delay {
        put("delay", OptValue::Text(format_time(p.delay)));
    }
    if p.jitter != d.jitter {
        put("jitter", OptValue::Text(format_time(p.jitter)));
    }
    if p.distribution != d.distribution {
        put("distribution", OptValue::Text(p.distribution.to_string()));
    }
    match p.loss {
        LossModel::None => {}
        LossModel::Random { p, correlation } => {
            put("loss", pct(p));
            if !correlation.is_zero() {
                put("loss_correlation", pct(correlation));
            }
        }
        LossModel::Gilbert { p, r, h, k } => {
            let g = vec![("p".into(), pct(p)), ("r".into(), pct(r)), ("h".into(), pct(h)), ("k".into(), pct(k))];
            put("loss_model", OptValue::Map(vec![("gilbert".into(), OptValue::Map(g))]));
        }
    }
    if !p.duplicate.is_zero() {
        put("duplicate", pct(p.duplicate));
    }
    if !p.reorder.is_zero() {
        put("reorder", pct(p.reorder));
    }
    if p.gap > 0 {
        put("gap", OptValue::Int(p.gap as i64));
    }
    if !p.corrupt.is_zero() {
        put("corrupt", pct(p.corrupt));
    }
    if let Some(r) = p.rate {
        put("rate", OptValue::Text(format_rate(r)));
    }
    if p.limit != d.limit {
        put("limit", OptValue::Int(p.limit.get().into()));
    }
    out
}

/// The options that [`parse`] turns back into `imp`.
pub fn render(imp: &LinkImpairment) -> Vec<(String, OptValue)> {
    let mut out = if imp.a_to_b == imp.b_to_a {
        render_direction(&imp.a_to_b)
    } else {
        vec![
            ("a_to_b".to_string(), OptValue::Map(render_direction(&imp.a_to_b))),
            ("b_to_a".to_string(), OptValue::Map(render_direction(&imp.b_to_a))),
        ]
    };
    if let Some(s) = imp.seed {
        out.push(("seed".into(), OptValue::Int(s as i64)));
    }
    out
}

/// Rhai source text of an option value (for `:save`).
pub fn to_rhai(v: &OptValue) -> String {
    match v {
        OptValue::Text(t) => format!("{t:?}"),
        OptValue::Number(n) => format!("{n}"),
        OptValue::Int(i) => i.to_string(),
        OptValue::Map(m) if m.is_empty() => "#{}".to_string(),
        OptValue::Map(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {}", to_rhai(v))).collect();
            format!("#{{ {} }}", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::units::test_values::{delay, p as prob, rate};

    fn t(s: &str) -> OptValue {
        OptValue::Text(s.into())
    }
    fn opts(v: Vec<(&str, OptValue)>) -> Vec<(String, OptValue)> {
        v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
    use std::time::Duration;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn both_directions_by_default_and_each_its_own_on_request() {
        let imp = parse(&opts(vec![("delay", t("20ms")), ("loss", OptValue::Number(1.5)), ("seed", OptValue::Int(7))]))
            .unwrap()
            .unwrap();
        assert_eq!(imp.a_to_b, imp.b_to_a);
        assert_eq!(imp.a_to_b.delay.get(), 20 * MS);
        assert_eq!(imp.a_to_b.loss, LossModel::Random { p: prob(0.015), correlation: prob(0.0) });
        assert_eq!(imp.seed, Some(7));
        let imp = parse(&opts(vec![
            ("delay", OptValue::Int(5)),
            ("a_to_b", OptValue::Map(opts(vec![("rate", t("10mbit"))]))),
            ("b_to_a", OptValue::Map(opts(vec![("delay", t("50ms"))]))),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((imp.a_to_b.delay, imp.a_to_b.rate), (delay(5 * MS), Some(rate(10_000_000))));
        assert_eq!((imp.b_to_a.delay, imp.b_to_a.rate), (delay(50 * MS), None));
        assert_eq!(parse(&opts(vec![("mtu", OptValue::Int(9000))])).unwrap(), None);
    }

    #[test]
    fn gilbert_and_correlation_parse() {
        let g = OptValue::Map(opts(vec![(
            "gilbert",
            OptValue::Map(opts(vec![("p", OptValue::Int(5)), ("r", OptValue::Int(50))])),
        )]));
        let imp = parse(&opts(vec![("loss_model", g)])).unwrap().unwrap();
        assert_eq!(imp.a_to_b.loss, LossModel::Gilbert { p: prob(0.05), r: prob(0.5), h: prob(0.0), k: prob(1.0) });
        let imp =
            parse(&opts(vec![("loss", OptValue::Int(10)), ("loss_correlation", OptValue::Int(25))])).unwrap().unwrap();
        assert_eq!(imp.b_to_a.loss, LossModel::Random { p: prob(0.1), correlation: prob(0.25) });
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = |v: Vec<(&str, OptValue)>| parse(&opts(v)).unwrap_err();
        assert!(err(vec![("delay", t("-5ms"))]).contains("out of range"));
        assert!(err(vec![("delay", OptValue::Int(-5))]).contains("negative"));
        assert!(err(vec![("loss", OptValue::Int(101))]).contains("0..=100 %"));
        assert!(err(vec![("rate", t("10 parsecs"))]).contains("not a rate"));
        assert!(err(vec![("delay", t("5 fortnights"))]).contains("not a time"));
        assert!(err(vec![("distribution", t("gauss"))]).contains("unknown distribution"));
        assert!(err(vec![("limit", OptValue::Int(0))]).contains("at least 1"));
        assert!(err(vec![("loss_correlation", OptValue::Int(5))]).contains("needs a loss"));
        assert!(err(vec![("reorder", OptValue::Int(5))]).contains("needs a delay"));
        assert!(err(vec![("a_to_b", OptValue::Map(opts(vec![("mtu", OptValue::Int(1))])))]).contains("unknown option"));
        let g = OptValue::Map(opts(vec![("gilbert", OptValue::Map(opts(vec![("p", OptValue::Int(5))])))]));
        assert!(err(vec![("loss_model", g)]).contains("needs r"));
    }

    #[test]
    fn rendering_parses_back_to_the_same_impairment() {
        let g = OptValue::Map(opts(vec![(
            "gilbert",
            OptValue::Map(opts(vec![("p", OptValue::Number(2.5)), ("r", OptValue::Int(40)), ("k", OptValue::Int(99))])),
        )]));
        for o in [
            opts(vec![
                ("delay", t("20ms")),
                ("jitter", t("250us")),
                ("distribution", t("pareto")),
                ("seed", OptValue::Int(3)),
            ]),
            opts(vec![
                ("loss", OptValue::Number(0.3)),
                ("loss_correlation", OptValue::Int(25)),
                ("rate", t("1500kbit")),
            ]),
            opts(vec![
                ("delay", t("10ms")),
                ("reorder", OptValue::Int(25)),
                ("gap", OptValue::Int(5)),
                ("duplicate", OptValue::Int(1)),
                ("corrupt", OptValue::Number(0.1)),
                ("limit", OptValue::Int(50)),
            ]),
            opts(vec![("a_to_b", OptValue::Map(opts(vec![("loss_model", g)]))), ("b_to_a", OptValue::Map(vec![]))]),
        ] {
            let imp = parse(&o).unwrap().unwrap();
            assert_eq!(parse(&render(&imp)).unwrap().unwrap(), imp, "{o:?}");
        }
        for odd in [80.1, 1.1, 0.1111111111111111, 33.333333333333336, 99.99999999999999, 1e-300] {
            let imp = parse(&opts(vec![("corrupt", OptValue::Number(odd))])).unwrap().unwrap();
            assert_eq!(parse(&render(&imp)).unwrap().unwrap(), imp, "corrupt {odd}%");
        }
        let eleven_tenths = Probability::percent("corrupt", 1.1).unwrap();
        assert_eq!(pct(eleven_tenths), OptValue::Number(1.1), "the fewest digits that read back");
        assert_eq!(pct(prob(0.25)), OptValue::Int(25));
        assert_eq!(format_time(Delay::new("delay", Duration::from_micros(1500)).unwrap()), "1500us");
        assert_eq!(format_rate(rate(2_000_000_000)), "2gbit");
        assert_eq!(to_rhai(&OptValue::Map(opts(vec![("delay", t("2ms"))]))), r#"#{ delay: "2ms" }"#);
    }
}
