//! `clonet bench`: the rows benchmark labs report, the table and JSON they
//! make, and whether each met its target (sans-IO).
//!
//! A benchmark lab (`scripts/bench/*.rhai`) measures clonet and its
//! baselines in the same run and reports each comparison with `bench_row`;
//! rows are collected for the process, so `clonet bench` can run several
//! labs and print one table, and `clonet run` of a single lab prints them
//! as they come.
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::script::context::{BenchFields, RowSink};

/// One measured comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// The row letter (`a` … `h` from the performance issues, `i` and `j`
    /// rootless against root, `k` a nat link against passt alone).
    pub row: String,
    /// What was measured (`TCP ns<->ns, 1 stream`).
    pub what: String,
    pub unit: String,
    /// clonet's figure.
    pub value: f64,
    /// The baseline built in the same run, if any.
    pub baseline: Option<String>,
    pub baseline_value: Option<f64>,
    /// `value / baseline_value`.
    pub ratio: Option<f64>,
    /// The goal, as written: `>= 1.0x`, `<= 20` (in `unit`), `<= 1.0x`.
    pub target: Option<String>,
    /// Whether the goal was met (None without a target).
    pub met: Option<bool>,
    /// The lab that measured it.
    pub bench: String,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BenchError {
    #[error("bad target {0:?}: expected `>= N`, `<= N`, `>= Nx` or `<= Nx`")]
    BadTarget(String),
    #[error("a ratio target ({0}) needs a baseline value")]
    NoBaseline(String),
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
}

/// A parsed target: compare the value (or the ratio) with a bound.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Target {
    at_least: bool,
    bound: f64,
    on_ratio: bool,
}

fn parse_target(text: &str) -> Result<Target, BenchError> {
    let bad = || BenchError::BadTarget(text.to_string());
    let t = text.trim();
    let (at_least, rest) = if let Some(r) = t.strip_prefix(">=") {
        (true, r)
    } else if let Some(r) = t.strip_prefix("<=") {
        (false, r)
    } else {
        return Err(bad());
    };
    let rest = rest.trim();
    let (number, on_ratio) = match rest.strip_suffix('x') {
        Some(n) => (n.trim(), true),
        None => (rest, false),
    };
    let bound: f64 = number.parse().map_err(|_| bad())?;
    if !bound.is_finite() {
        return Err(bad());
    }
    Ok(Target { at_least, bound, on_ratio })
}

impl BenchRow {
    /// A row with its ratio and verdict worked out.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bench: &str,
        row: &str,
        what: &str,
        unit: &str,
        value: f64,
        baseline: Option<(String, f64)>,
        target: Option<String>,
    ) -> Result<BenchRow, BenchError> {
        if !value.is_finite() {
            return Err(BenchError::NotFinite("value"));
        }
        if baseline.as_ref().is_some_and(|(_, v)| !v.is_finite()) {
            return Err(BenchError::NotFinite("baseline_value"));
        }
        let ratio = baseline.as_ref().and_then(|(_, b)| (*b != 0.0).then(|| value / b));
        let met = match &target {
            None => None,
            Some(text) => {
                let t = parse_target(text)?;
                let x = if t.on_ratio { ratio.ok_or_else(|| BenchError::NoBaseline(text.clone()))? } else { value };
                Some(if t.at_least { x >= t.bound } else { x <= t.bound })
            }
        };
        let (baseline, baseline_value) = baseline.map_or((None, None), |(n, v)| (Some(n), Some(v)));
        Ok(BenchRow {
            row: row.to_string(),
            what: what.to_string(),
            unit: unit.to_string(),
            value,
            baseline,
            baseline_value,
            ratio,
            target,
            met,
            bench: bench.to_string(),
        })
    }

    /// One line, as `clonet run` prints it.
    pub fn line(&self) -> String {
        let mut s = format!("({}) {}: {} {}", self.row, self.what, number(self.value), self.unit);
        if let (Some(b), Some(v)) = (&self.baseline, self.baseline_value) {
            s += &format!("; {b}: {} {}", number(v), self.unit);
        }
        if let Some(r) = self.ratio {
            s += &format!("; ratio {}x", number(r));
        }
        if let (Some(t), Some(m)) = (&self.target, self.met) {
            s += &format!("; target {t}: {}", if m { "met" } else { "MISSED" });
        }
        s
    }
}

/// Three significant digits, without exponent for everyday magnitudes.
pub fn number(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

/// The whole table, rows in the order given, columns padded.
pub fn table(rows: &[BenchRow]) -> String {
    let header = ["row", "measure", "clonet", "baseline (same run)", "baseline", "ratio", "target", ""];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let with_unit = |v: f64| format!("{} {}", number(v), r.unit);
            [
                r.row.clone(),
                r.what.clone(),
                with_unit(r.value),
                r.baseline.clone().unwrap_or_else(|| "-".into()),
                r.baseline_value.map(with_unit).unwrap_or_else(|| "-".into()),
                r.ratio.map(|x| format!("{}x", number(x))).unwrap_or_else(|| "-".into()),
                r.target.clone().unwrap_or_else(|| "-".into()),
                match r.met {
                    Some(true) => "met".into(),
                    Some(false) => "MISSED".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(widths).enumerate() {
            // Figures right-aligned, words left-aligned.
            let right = matches!(i, 2 | 4 | 5);
            let pad = w - cell.chars().count();
            if right {
                s += &" ".repeat(pad);
                s += cell;
            } else {
                s += cell;
                s += &" ".repeat(pad);
            }
            s += "  ";
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for c in &cells {
        out += &line(c);
    }
    out
}

/// A sink for a script's `bench_row` calls: each row is checked, printed
/// as it comes (on stderr when stdout is kept for the report, as with
/// `clonet bench`, whose stdout is the table or the JSON), and kept in
/// `rows`.
pub fn collector(rows: Arc<Mutex<Vec<BenchRow>>>, to_stderr: bool) -> RowSink {
    Arc::new(move |f: BenchFields| {
        let row = BenchRow::new(&f.lab, &f.row, &f.what, &f.unit, f.value, f.baseline, f.target)
            .map_err(|e| e.to_string())?;
        if to_stderr {
            eprintln!("{}", row.line());
        } else {
            println!("{}", row.line());
        }
        rows.lock().unwrap_or_else(|p| p.into_inner()).push(row);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: f64, base: Option<f64>, target: Option<&str>) -> Result<BenchRow, BenchError> {
        BenchRow::new("t", "a", "TCP", "Gbit/s", value, base.map(|b| ("bridge".into(), b)), target.map(String::from))
    }

    #[test]
    fn ratio_targets_compare_against_the_baseline() {
        let r = row(10.0, Some(20.0), Some(">= 0.5x")).unwrap();
        assert_eq!(r.ratio, Some(0.5));
        assert_eq!(r.met, Some(true));
        assert_eq!(row(9.9, Some(20.0), Some(">= 0.5x")).unwrap().met, Some(false));
        assert_eq!(row(30.0, Some(20.0), Some("<= 1.0x")).unwrap().met, Some(false));
    }

    #[test]
    fn absolute_targets_compare_the_value() {
        assert_eq!(row(12.0, None, Some("<= 20")).unwrap().met, Some(true));
        assert_eq!(row(21.0, None, Some("<=20")).unwrap().met, Some(false));
        assert_eq!(row(21.0, None, None).unwrap().met, None);
    }

    #[test]
    fn bad_targets_and_numbers_are_refused() {
        assert_eq!(row(1.0, None, Some("> 3")), Err(BenchError::BadTarget("> 3".into())));
        assert_eq!(row(1.0, None, Some(">= lots")), Err(BenchError::BadTarget(">= lots".into())));
        assert_eq!(row(1.0, None, Some(">= 2x")), Err(BenchError::NoBaseline(">= 2x".into())));
        assert_eq!(row(f64::NAN, None, None), Err(BenchError::NotFinite("value")));
        assert_eq!(row(1.0, Some(f64::INFINITY), None), Err(BenchError::NotFinite("baseline_value")));
    }

    #[test]
    fn a_zero_baseline_has_no_ratio() {
        assert_eq!(row(1.0, Some(0.0), None).unwrap().ratio, None);
    }

    #[test]
    fn the_table_aligns_columns_and_marks_missed_targets() {
        let rows = [row(11.34, Some(16.7), Some(">= 1.0x")).unwrap(), row(0.612, None, None).unwrap()];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("row  measure"));
        assert!(lines[1].contains("11.3 Gbit/s") && lines[1].contains("0.679x") && lines[1].ends_with("MISSED"));
        assert!(lines[2].contains("0.612 Gbit/s"));
        // The figure column ends at the same place on every line.
        let end = |l: &str, pat: &str| l.find(pat).unwrap() + pat.len();
        assert_eq!(end(lines[1], "Gbit/s"), end(lines[2], "Gbit/s"));
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.12345), "0.123");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.000123), "1.23e-4");
    }

    #[test]
    fn rows_round_trip_through_json() {
        let r = row(11.0, Some(16.0), Some(">= 1.0x")).unwrap();
        let back: BenchRow = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
