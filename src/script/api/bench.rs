//! The `bench_api` Rhai module: `bench_row`, which benchmark scripts call
//! to report a figure.
//!
//! Owns: reading a row's fields. Must not touch: the lab; rows go to the
//! sink in the script's context (`clonet bench` and `clonet run` give one).
use rhai::plugin::*;
use rhai::{Map, NativeCallContext};

use super::{check_keys, opt_number, opt_str, script_error, RhaiResult};

/// Reporting benchmark figures (`scripts/bench/`, `clonet bench`).
#[export_module]
pub mod bench_api {
    use super::*;
    use crate::script::context::BenchFields;

    /// Reports one benchmark figure: clonet's `value` in `unit`, and the
    /// baseline measured in the same run, with the ratio of the two and
    /// whether `target` was met. `target` is `">= N"` or `"<= N"` on the
    /// value, or `">= Nx"` / `"<= Nx"` on the ratio. The row is printed;
    /// `clonet bench` also gathers it into its table and `--json`.
    ///
    /// ```rhai
    /// bench_row(#{ row: "a", what: "TCP ns<->ns, 1 stream", unit: "Gbit/s",
    ///              value: 11.3, baseline: "Linux bridge", baseline_value: 16.7,
    ///              target: ">= 1.0x" });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn bench_row(ctx: NativeCallContext, fields: Map) -> RhaiResult<()> {
        const F: &str = "bench_row";
        check_keys(F, &fields, &["row", "what", "unit", "value", "baseline", "baseline_value", "target"])?;
        let need = |k: &str| script_error(format!("{F}(): {k} is required"));
        let row = opt_str(F, &fields, "row")?.ok_or_else(|| need("row"))?;
        let what = opt_str(F, &fields, "what")?.ok_or_else(|| need("what"))?;
        let unit = opt_str(F, &fields, "unit")?.unwrap_or_default();
        let value = opt_number(F, &fields, "value")?.ok_or_else(|| need("value"))?;
        let baseline = match (opt_str(F, &fields, "baseline")?, opt_number(F, &fields, "baseline_value")?) {
            (Some(name), Some(v)) => Some((name, v)),
            (None, None) => None,
            _ => return Err(script_error(format!("{F}(): baseline and baseline_value go together"))),
        };
        let target = opt_str(F, &fields, "target")?;
        let source = ctx.call_source().unwrap_or("script");
        let lab = std::path::Path::new(source).file_stem().map(|s| s.to_string_lossy().to_string());
        let Some(sink) = super::super::context_of(&ctx).and_then(|c| c.rows) else {
            return Err(script_error(format!("{F}(): this interpreter does not collect benchmark rows")));
        };
        let fields = BenchFields { lab: lab.unwrap_or_default(), row, what, unit, value, baseline, target };
        sink(fields).map_err(|e| script_error(format!("{F}(): {e}")))
    }
}
