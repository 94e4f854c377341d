//! Labs of other tools, loaded into the script's lab: Kathará lab
//! directories and containerlab topologies, written as Rhai by `import`
//! and run here, so a `clonet test` file can build one and check it.
use rhai::plugin::*;
use rhai::{Array, Map, NativeCallContext};

use super::{check_keys, context_of, lab_topology, opt_str, refuse_in_answer, script_error, RhaiResult};
use crate::import::{Foreign, ImagePolicy};

/// Loads the lab at `path` (relative to the script) if it is of the
/// format `want` says, and returns what it made.
fn load_foreign(
    ctx: &NativeCallContext,
    fn_name: &str,
    path: &str,
    options: &Map,
    want: fn(&Foreign) -> bool,
    what: &str,
) -> RhaiResult<Map> {
    refuse_in_answer(ctx, fn_name)?;
    check_keys(fn_name, options, &["images"])?;
    let base = context_of(ctx).map(|c| c.script_dir).unwrap_or_else(|| ".".into());
    let at = |p: &str| {
        let p = std::path::Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let images = match opt_str(fn_name, options, "images")? {
        None => ImagePolicy::default(),
        Some(v) if v == "host" => ImagePolicy::Host,
        Some(file) => ImagePolicy::from_option(&at(&file).display().to_string())
            .map_err(|e| script_error(format!("{fn_name}(): {e}")))?,
    };
    let path = at(path);
    let foreign = Foreign::detect(&path)
        .filter(want)
        .ok_or_else(|| script_error(format!("{fn_name}(): {} is not {what}", path.display())))?;
    let dir = std::path::absolute(foreign.dir()).map_err(|e| script_error(format!("{fn_name}(): {e}")))?;
    let converted =
        foreign.to_rhai(&images, &dir.display().to_string()).map_err(|e| script_error(format!("{fn_name}(): {e}")))?;
    for w in &converted.warnings {
        crate::lab::progress::print_around(|| eprintln!("warning: {w}"));
    }
    crate::import::images::ensure(&converted.images, &mut |m| {
        crate::lab::progress::print_around(|| eprintln!("clonet: {m}"))
    })
    .map_err(|e| script_error(format!("{fn_name}(): {}: {e}", foreign.source_file().display())))?;
    let before = lab_topology(ctx)?;
    let source = format!("{} (as Rhai)", foreign.source_file().display());
    let mut ast =
        ctx.engine().compile(&converted.script).map_err(|e| script_error(format!("{fn_name}(): {source}: {e}")))?;
    ast.set_source(source.as_str());
    ctx.engine().run_ast_with_scope(&mut rhai::Scope::new(), &ast).map_err(|e| {
        script_error(format!("{fn_name}(): {}", crate::script::report::ErrorReport::runtime(&source, &e).message))
    })?;
    let after = lab_topology(ctx)?;
    let nodes: Array =
        after.order.iter().filter(|n| !before.nodes.contains_key(*n)).map(|n| n.clone().into()).collect();
    let lans: Array = after.lans.keys().filter(|l| !before.lans.contains_key(*l)).map(|l| l.clone().into()).collect();
    let mut map = Map::new();
    map.insert("nodes".into(), nodes.into());
    map.insert("lans".into(), lans.into());
    map.insert("warnings".into(), converted.warnings.into_iter().map(Into::into).collect::<Array>().into());
    Ok(map)
}

#[export_module]
pub mod import_api {
    use super::*;

    /// Builds a Kathará lab in this lab: `dir` holds its `lab.conf`
    /// (relative to the script). Its devices become ns nodes, its
    /// collision domains LANs, with Kathará's device defaults, files,
    /// `shared/`, `lab.dep` order and start-up files (see `clonet convert`
    /// for the script it runs). Returns `#{nodes, lans, warnings}`.
    /// `images` is `"host"` (devices run the host's own programs) or a
    /// TOML map of image names to `"host"` or `"rootfs:DIR"`.
    ///
    /// ```rhai
    /// let dir = host_exec("d=$(mktemp -d); printf 'pc1[0]=A\\npc2[0]=A\\n' > $d/lab.conf; " +
    ///     "echo 'ip addr add 10.0.0.1/24 dev eth0' > $d/pc1.startup; " +
    ///     "echo 'ip addr add 10.0.0.2/24 dev eth0' > $d/pc2.startup; echo $d").stdout.trimmed();
    /// let lab = load_kathara(dir, #{ images: "host" });
    /// assert(lab.nodes == ["pc1", "pc2"] && lab.lans == ["A"]);
    /// assert(ping(get_node("pc1"), "10.0.0.2"));
    /// host_exec(`rm -r ${dir}`);
    /// ```
    #[rhai_fn(name = "load_kathara", return_raw)]
    pub fn load_kathara_with(ctx: NativeCallContext, dir: &str, options: Map) -> RhaiResult<Map> {
        load_foreign(
            &ctx,
            "load_kathara",
            dir,
            &options,
            |f| matches!(f, Foreign::Kathara(_)),
            "a Kathará lab (a directory with lab.conf)",
        )
    }

    /// Builds a Kathará lab whose images this machine has (see
    /// `load_kathara(dir, options)`).
    ///
    /// ```rhai
    /// try { load_kathara("no-such-lab"); } catch (e) { print(e); }   // not a Kathará lab
    /// ```
    #[rhai_fn(name = "load_kathara", return_raw)]
    pub fn load_kathara(ctx: NativeCallContext, dir: &str) -> RhaiResult<Map> {
        load_kathara_with(ctx, dir, Map::new())
    }

    /// Builds a containerlab topology in this lab (`file`, a
    /// `.clab.yml`, relative to the script): linux and frr nodes become
    /// ns nodes, bridges LANs; links, binds, env and exec as containerlab
    /// does them. Returns `#{nodes, lans, warnings}`; `images` as for
    /// `load_kathara`.
    ///
    /// ```rhai
    /// let dir = host_exec("d=$(mktemp -d); printf 'name: t\\ntopology:\\n  nodes:\\n" +
    ///     "    a: {kind: linux, image: alpine, exec: [\"ip addr add 10.0.0.1/24 dev eth1\"]}\\n" +
    ///     "    b: {kind: linux, image: alpine, exec: [\"ip addr add 10.0.0.2/24 dev eth1\"]}\\n" +
    ///     "  links:\\n    - endpoints: [\"a:eth1\", \"b:eth1\"]\\n' > $d/t.clab.yml; echo $d").stdout.trimmed();
    /// let lab = load_clab(`${dir}/t.clab.yml`, #{ images: "host" });
    /// assert(ping(get_node("a"), "10.0.0.2"));
    /// host_exec(`rm -r ${dir}`);
    /// ```
    #[rhai_fn(name = "load_clab", return_raw)]
    pub fn load_clab_with(ctx: NativeCallContext, file: &str, options: Map) -> RhaiResult<Map> {
        load_foreign(
            &ctx,
            "load_clab",
            file,
            &options,
            |f| matches!(f, Foreign::Clab(_)),
            "a containerlab topology (*.clab.yml)",
        )
    }

    /// Builds a containerlab topology whose images this machine has (see
    /// `load_clab(file, options)`).
    ///
    /// ```rhai
    /// try { load_clab("lab.rhai"); } catch (e) { print(e); }   // not a containerlab topology
    /// ```
    #[rhai_fn(name = "load_clab", return_raw)]
    pub fn load_clab(ctx: NativeCallContext, file: &str) -> RhaiResult<Map> {
        load_clab_with(ctx, file, Map::new())
    }
}
