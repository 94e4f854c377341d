//! The `clonet` command line.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use colored::Colorize;

use clonet::host::helpers::{ns_enter_main, ns_init_main};
use clonet::host::ns::LinuxHost;
use clonet::lab::handle::LabRef;
use clonet::lab::rundir;
use clonet::lab::Lab;
use clonet::script;

#[derive(Parser)]
#[command(name = "clonet", version, about = "Virtual network labs scripted in Rhai, with a userspace switch")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a lab script; the lab lives while the script runs.
    Run {
        /// The .rhai script (optional with --restore).
        #[arg(required_unless_present = "restore")]
        file: Option<PathBuf>,
        /// First rebuild the lab saved in this directory by `save_lab`.
        #[arg(long, value_name = "DIR")]
        restore: Option<PathBuf>,
        /// Lab name (default: the script's file stem).
        #[arg(long)]
        name: Option<String>,
        /// Open a REPL on the live lab when the script ends, like `python -i`.
        #[arg(short, long)]
        interactive: bool,
    },
    /// Run a lab script and keep the lab, without a REPL, until `clonet
    /// stop LAB`, Ctrl-C or SIGTERM; other terminals drive it meanwhile
    /// (`clonet attach`, `exec`, `capture`, `ls`).
    Serve {
        /// The .rhai script that builds the lab.
        file: PathBuf,
        /// Lab name (default: the script's file stem).
        #[arg(long)]
        name: Option<String>,
        /// Also serve the web GUI (its URL, with its access token, is printed).
        #[arg(long)]
        gui: bool,
    },
    /// Serve the web GUI of a running lab on 127.0.0.1 (a random port and
    /// access token, printed as a URL), until Ctrl-C or the lab ends.
    Gui {
        /// The running lab's name (see `clonet ls`).
        lab: String,
    },
    /// Draw a script's topology without running it: a dry build that
    /// starts no node and touches nothing on the host (`exec` answers with
    /// its command line, `ping` is answered, `host_exec` and `sleep` do
    /// nothing). A script that stops early is drawn as far as it got.
    Graph {
        /// The .rhai script.
        file: PathBuf,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// svg, dot (Graphviz) or mermaid; default: from the output's
        /// extension (.svg, .dot/.gv, .mmd), else svg.
        #[arg(long)]
        format: Option<String>,
    },
    /// List the running labs: name, pid, nodes, links, LANs, uptime.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Open the REPL on a running lab (`clonet serve`, `run`, `repl` in
    /// another terminal); several can attach at once. `:quit` detaches.
    Attach {
        /// The running lab's name (see `clonet ls`).
        lab: String,
    },
    /// Run a command in a node of a running lab; its output is printed and
    /// its exit status is clonet's: `clonet exec lab a -- ip addr`.
    Exec {
        lab: String,
        node: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Tear a running lab down (as Ctrl-C in its terminal would), and wait
    /// until it is gone.
    Stop { lab: String },
    /// An interactive lab: type Rhai, see results, `:help` for more.
    Repl {
        /// Lab name.
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Remove what labs killed with SIGKILL left behind.
    Clean,
    /// Attach to a node's console in a running lab (Ctrl-] detaches and
    /// leaves the node running); for an ns node, a shell inside it.
    Console {
        node: String,
        /// The lab, when several running labs have a node of that name.
        #[arg(long)]
        lab: Option<String>,
    },
    /// Follow the frames of a link, LAN or `node:iface` port of a running
    /// lab from another terminal, as pcap on stdout:
    /// `clonet capture lab a--b | tshark -r -`.
    Capture {
        /// The running lab's name.
        lab: String,
        /// A link (`a--b`), a LAN, or a port (`node:iface`).
        target: String,
        /// Stop after this many frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
    },
    /// Run test files: each file's top level builds its lab once, then every
    /// `fn test_*()` runs in order against it; the lab is always torn down.
    /// The last line is `N passed, N failed` (`, N skipped`); the exit
    /// status is 1 when a test failed.
    Test {
        /// Files, or directories searched for `*.rhai` files with `test_*`
        /// functions (default: the current directory).
        paths: Vec<PathBuf>,
        /// Only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Also write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Run the benchmark labs (`scripts/bench/*.rhai` that report rows with
    /// `bench_row`) and print one table: clonet's figure, the baseline
    /// measured in the same run on the same machine, their ratio, and the
    /// target. Each lab runs on a lab of its own, torn down afterwards.
    Bench {
        /// Benchmark labs by name (file stem: `throughput`, `hops`, `scale`,
        /// `uml`), or paths to scripts (default: every lab in --dir that
        /// reports rows).
        names: Vec<String>,
        /// Print the rows as JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Tiny settings (a few nodes, one-second runs): checks that every
        /// row produces numbers, not what they are worth. Sets BENCH_QUICK=1.
        #[arg(long)]
        quick: bool,
        /// Where the benchmark labs are.
        #[arg(long, default_value = "scripts/bench")]
        dir: PathBuf,
    },
    /// Teaching exercises (`scripts/exercises/NN-name/`).
    #[command(subcommand)]
    Exercise(ExerciseCmd),
    /// Guest images for uml (and later kvm) nodes.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Print the API reference (every function, with an example), from the
    /// same doc comments as `:help`: all of it as Markdown, or one function.
    #[command(alias = "api")]
    Doc {
        /// Only functions with this name.
        name: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Write the Markdown reference to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    #[command(name = "__ns-init", hide = true)]
    NsInit {
        hostname: String,
        hosts: PathBuf,
        /// The copy-on-write root: LOWER UPPER WORK MERGED.
        #[arg(num_args = 4)]
        root: Vec<String>,
    },
    #[command(name = "__tap-forward", hide = true)]
    TapForward { pid_a: i32, pid_b: i32, owner: i32 },
    #[command(name = "__ns-enter", hide = true)]
    NsEnter {
        pid: i32,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ExerciseCmd {
    /// Grade answers: for each, a fresh lab from DIR/lab.rhai, the answer,
    /// then the checks of DIR/check.rhai, each with its points.
    Check {
        /// The exercise directory.
        dir: PathBuf,
        /// A student's answer (a .rhai script); repeat for several.
        #[arg(long, required = true)]
        answer: Vec<PathBuf>,
        /// Write one JSON object per student here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write one CSV row per student here.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

fn write_or_complain(path: &Path, text: &str) -> bool {
    match std::fs::write(path, text) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("clonet: writing {}: {e}", path.display());
            false
        }
    }
}

/// The benchmark labs to run: those named (a stem in `dir`, or a path),
/// else every script in `dir` that reports rows.
fn bench_files(names: &[String], dir: &Path) -> Result<Vec<PathBuf>, String> {
    if names.is_empty() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("bench_row(")))
            .collect();
        files.sort();
        return Ok(files);
    }
    names
        .iter()
        .map(|n| {
            let as_path = PathBuf::from(n);
            let in_dir = dir.join(format!("{n}.rhai"));
            [as_path, in_dir].into_iter().find(|p| p.is_file()).ok_or_else(|| {
                format!("no benchmark lab {n:?} (neither a file nor {})", dir.join(format!("{n}.rhai")).display())
            })
        })
        .collect()
}

fn bench(names: &[String], json: bool, quick: bool, dir: &Path) -> ExitCode {
    use clonet::testing::bench;
    if let Err(code) = prepare_terminal() {
        return code;
    }
    let files = match bench_files(names, dir) {
        Ok(f) if f.is_empty() => {
            eprintln!("{}: no benchmark labs in {}", "error".red().bold(), dir.display());
            return ExitCode::FAILURE;
        }
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", "error".red().bold());
            return ExitCode::FAILURE;
        }
    };
    if quick {
        // Read by the benchmark labs through env(); set before any thread
        // that could read the environment starts.
        std::env::set_var("BENCH_QUICK", "1");
    }
    bench::reserve_stdout(true);
    let mut rows = Vec::new();
    let mut failed = false;
    for file in files {
        if clonet::interrupt::requested() {
            failed = true;
            break;
        }
        eprintln!("clonet bench: {}", file.display());
        match clonet::testing::run_bench(&file, Box::new(LinuxHost), &rundir::base_dir(), color()) {
            Ok(r) if r.is_empty() => {
                eprintln!("{}: {} reported no rows", "error".red().bold(), file.display());
                failed = true;
            }
            Ok(r) => rows.extend(r),
            Err(report) => {
                eprintln!("{report}");
                failed = true;
            }
        }
    }
    // By row letter; a row's lines stay in the order they were measured.
    rows.sort_by(|a, b| a.row.cmp(&b.row));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("rows serialize"));
    } else {
        print!("{}", bench::table(&rows));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_tests(paths: Vec<PathBuf>, filter: Option<String>, junit: Option<PathBuf>, json: Option<PathBuf>) -> ExitCode {
    use clonet::testing::report::{self, Outcome};
    if let Err(code) = prepare_terminal() {
        return code;
    }
    let paths = if paths.is_empty() { vec![PathBuf::from(".")] } else { paths };
    let files = match clonet::testing::discover(&paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("clonet: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut all = Vec::new();
    for file in files {
        if clonet::interrupt::requested() {
            break;
        }
        let mut print = |r: &report::TestResult| {
            let (word, detail) = match &r.outcome {
                Outcome::Passed => ("PASS".green().bold(), String::new()),
                Outcome::Failed { message } => ("FAIL".red().bold(), format!("\n{}", indent(message))),
                Outcome::Skipped { reason } => ("SKIP".yellow().bold(), format!("  ({reason})")),
            };
            println!("{word} {} {} ({:.2} s){detail}", r.file, r.name, r.seconds);
        };
        let results = clonet::testing::run_file(
            &file,
            Box::new(LinuxHost),
            &rundir::base_dir(),
            filter.as_deref(),
            color(),
            &mut print,
        );
        all.extend(results);
    }
    let totals = report::totals(&all);
    let written = junit.as_deref().is_none_or(|p| write_or_complain(p, &report::junit_xml(&all)))
        & json.as_deref().is_none_or(|p| write_or_complain(p, &report::json(&all)));
    println!("{}", report::summary_line(totals));
    if let Some(sig) = clonet::interrupt::signal() {
        return ExitCode::from((128 + sig) as u8);
    }
    if totals.failed > 0 || !written {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

fn exercise(cmd: ExerciseCmd) -> ExitCode {
    let ExerciseCmd::Check { dir, answer, json, csv } = cmd;
    if let Err(code) = prepare_terminal() {
        return code;
    }
    let exercise = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let mut grades = Vec::new();
    for a in &answer {
        if clonet::interrupt::requested() {
            break;
        }
        match clonet::testing::grade(&dir, a, Box::new(LinuxHost), &rundir::base_dir(), color()) {
            Ok(g) => {
                print!("{}", grade_report(&exercise, &g));
                grades.push(g);
            }
            Err(e) => {
                eprintln!("{}: {exercise}: {e}", "error".red().bold());
                return ExitCode::FAILURE;
            }
        }
    }
    let written = json
        .as_deref()
        .is_none_or(|p| write_or_complain(p, &serde_json::to_string_pretty(&grades).expect("serializable")))
        & csv.as_deref().is_none_or(|p| write_or_complain(p, &clonet::testing::report::grades_csv(&grades)));
    if clonet::interrupt::requested() || !written {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A student's graded report: the score, then each check with its points
/// and the reason for any failure.
fn grade_report(exercise: &str, g: &clonet::testing::report::Grade) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let score = format!("{}/{}", g.score, g.max);
    let score = if g.score == g.max { score.green().bold() } else { score.red().bold() };
    let _ = writeln!(out, "{exercise}: {} scored {score}", g.student.bold());
    if let Some(e) = &g.answer_error {
        let _ = writeln!(out, "  {} the answer stopped with an error:\n{}", "!".red().bold(), indent(e));
    }
    let width = g.checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    for c in &g.checks {
        let mark = if c.passed { "✓".green().bold() } else { "✗".red().bold() };
        let _ = write!(out, "  {mark} {:<width$}  {}/{}", c.name, c.points, c.max);
        if !c.passed {
            let _ = write!(out, "  {}", c.reason.replace('\n', "\n      "));
        }
        out.push('\n');
    }
    out
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build the busybox guest image (from Debian's busybox-static), unless
    /// the cached one is up to date.
    Build {
        /// Rebuild even if up to date.
        #[arg(long)]
        force: bool,
    },
    /// List cached images, and files of the cache no image uses.
    Ls,
    /// Remove the files of the cache no image uses (left by interrupted
    /// builds).
    Gc,
}

fn image(cmd: ImageCmd) -> ExitCode {
    let dir = clonet::image::cache_dir();
    match cmd {
        ImageCmd::Ls => {
            let images = clonet::image::list(&dir);
            if images.is_empty() {
                println!("no images in {} (build one with `clonet image build`)", dir.display());
            }
            for i in images {
                println!("{:<16} {:>6} MiB  {}  {}", i.name, i.bytes >> 20, i.fingerprint, i.path.display());
            }
            if let Some(k) = clonet::image::kvm::find(&dir) {
                let mib = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() >> 20);
                let parts = [&k.kernel, &k.initrd, &k.disk].map(|p| mib(p)).iter().sum::<u64>();
                println!("{:<16} {:>6} MiB  {}  {}", "kvm-busybox", parts, k.fingerprint, k.disk.display());
                println!("{:<16} {:>6}      kernel {}, initramfs {}", "", "", k.kernel.display(), k.initrd.display());
            }
            let unused = clonet::image::unused(&dir);
            if !unused.is_empty() {
                let total: u64 = unused.iter().map(|(_, b)| b).sum();
                println!("unused ({} KiB; `clonet image gc` removes them):", total >> 10);
                for (p, b) in unused {
                    println!("  {:>8} KiB  {}", b >> 10, p.display());
                }
            }
            ExitCode::SUCCESS
        }
        ImageCmd::Gc => match clonet::image::gc(&dir) {
            Ok(removed) => {
                let total: u64 = removed.iter().map(|(_, b)| b).sum();
                for (p, _) in &removed {
                    println!("removed {}", p.display());
                }
                println!("{} unused file(s), {} KiB freed", removed.len(), total >> 10);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", "error".red().bold());
                ExitCode::FAILURE
            }
        },
        ImageCmd::Build { force } => {
            let recipe = match clonet::image::default_recipe() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", "error".red().bold());
                    return ExitCode::FAILURE;
                }
            };
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(std::time::Duration::from_millis(100));
            let mut step = |s: &str| spinner.set_message(format!("{}: {s}", recipe.name));
            let result = clonet::image::build(&recipe, &dir, force, &mut step);
            spinner.finish_and_clear();
            match result {
                Ok((info, built)) => {
                    let what = |b| match b {
                        clonet::image::Built::Fresh => "built",
                        clonet::image::Built::UpToDate => "up to date",
                    };
                    println!("{} {}: {} ({} MiB)", info.name, what(built), info.path.display(), info.bytes >> 20);
                    // The kvm image is made from it; a host without a kernel
                    // package still gets its uml image.
                    let spinner = indicatif::ProgressBar::new_spinner();
                    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
                    let mut step = |s: &str| spinner.set_message(format!("kvm-busybox: {s}"));
                    let kvm = clonet::image::kvm::build(&dir, &info, force, &mut step);
                    spinner.finish_and_clear();
                    match kvm {
                        Ok((k, built)) => println!(
                            "kvm-busybox {}: {} (kernel {})",
                            what(built),
                            k.disk.display(),
                            k.kernel.display()
                        ),
                        Err(e) => eprintln!("{}: no kvm image: {e}", "warning".yellow().bold()),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", "error".red().bold());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// What every command that runs labs does first: colours when stderr is a
/// terminal, and the interrupt handlers that let Ctrl-C tear labs down.
fn prepare_terminal() -> Result<(), ExitCode> {
    colored::control::set_override(color());
    clonet::interrupt::install().map_err(|e| {
        eprintln!("clonet: cannot install signal handlers: {e}");
        ExitCode::FAILURE
    })
}

fn lab_name(file: &Path, name: Option<String>) -> String {
    name.unwrap_or_else(|| file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "lab".into()))
}

/// What a session does once its script (if any) has run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Tear the lab down.
    TearDown,
    /// Open the REPL on it.
    Repl,
    /// Keep serving it until stopped (with the web GUI if asked).
    Serve { gui: bool },
}

/// `clonet graph`: a dry build of the script, drawn.
fn graph(file: &Path, output: Option<&Path>, format: Option<&str>) -> ExitCode {
    use clonet::lab::graph::{render, Format};
    let fail = |msg: String| {
        eprintln!("{}: {msg}", "error".red().bold());
        ExitCode::FAILURE
    };
    colored::control::set_override(color());
    let by_extension = output.and_then(|o| o.extension()).and_then(|e| e.to_str()).map(|e| match e {
        "dot" | "gv" => "dot",
        "mmd" | "mermaid" => "mermaid",
        _ => "svg",
    });
    let format = match Format::parse(format.or(by_extension).unwrap_or("svg")) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if !file.is_file() {
        return fail(format!("cannot read {}: no such file", file.display()));
    }
    // A scratch run directory: the dry lab's state, removed afterwards.
    let scratch = std::env::temp_dir().join(format!("clonet-graph-{}", std::process::id()));
    let host = Box::new(clonet::host::fake::FakeHost::dry());
    // The picture goes to stdout; what the script prints, to stderr.
    clonet::testing::bench::reserve_stdout(true);
    let lab = match Lab::new(&lab_name(file, None), host, &scratch, Some(file)) {
        Ok(l) => LabRef::local(l),
        Err(e) => return fail(e.to_string()),
    };
    script::api::set_dry_run(true);
    let engine = script::engine(lab.clone(), script::script_dir(file));
    if let Err(report) = script::run_file(&engine, file) {
        eprint!("{}", report.render(&script::report::read_source, color()));
        eprintln!("{}: the script stopped there; drawing what it had built", "warning".yellow().bold());
    }
    drop(engine);
    let topology = lab.topology();
    lab.teardown();
    let _ = std::fs::remove_dir_all(&scratch);
    let text = match topology {
        Ok(t) => render(&t, format),
        Err(e) => return fail(e.to_string()),
    };
    match output {
        Some(path) => {
            if !write_or_complain(path, &text) {
                return ExitCode::FAILURE;
            }
        }
        None => print!("{text}"),
    }
    ExitCode::SUCCESS
}

/// `clonet gui LAB`: the web GUI of a lab another process runs.
fn gui(lab: &str) -> ExitCode {
    let dir = match clonet::lab::control::running_lab_dir(lab) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}: {e}", "error".red().bold());
            return ExitCode::FAILURE;
        }
    };
    let server = match clonet::gui::Gui::start(&dir) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{}: starting the GUI: {e}", "error".red().bold());
            return ExitCode::FAILURE;
        }
    };
    println!("{}", server.url);
    eprintln!("clonet: the GUI of lab {lab} is at the URL above (this machine only); Ctrl-C ends it");
    while !clonet::interrupt::requested() && dir.join(clonet::lab::control::SOCKET).exists() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ExitCode::SUCCESS
}

/// Runs a script, a REPL, or a script then a REPL, on one lab, first
/// rebuilt from a saved lab if asked; or serves the lab a script built.
fn session(file: Option<&Path>, restore: Option<&Path>, name: String, after: After) -> ExitCode {
    if let Err(code) = prepare_terminal() {
        return code;
    }
    if let Some(f) = file.filter(|f| !f.is_file()) {
        eprintln!("{}: cannot read {}: no such file", "error".red().bold(), f.display());
        return ExitCode::FAILURE;
    }
    let lab = match Lab::new(&name, Box::new(LinuxHost), &rundir::base_dir(), file) {
        Ok(lab) => match LabRef::served(lab) {
            Ok(lab) => lab,
            Err(e) => {
                eprintln!("{}: {e}", "error".red().bold());
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("{}: {e}", "error".red().bold());
            return ExitCode::FAILURE;
        }
    };
    if let Some(saved) = restore {
        let loaded = lab.execute(clonet::lab::command::Command::LoadLab { dir: saved.to_path_buf() });
        if let Err(e) = loaded {
            eprintln!("{}: restoring {}: {e}", "error".red().bold(), saved.display());
            lab.teardown();
            return ExitCode::FAILURE;
        }
        eprintln!("clonet: lab {name} restored from {}", saved.display());
    }
    let dir = file.map_or(Path::new("."), script::script_dir);
    let engine = script::engine(lab.clone(), dir);
    let mut scope = rhai::Scope::new();
    let mut status = ExitCode::SUCCESS;
    if let Some(file) = file {
        if let Err(report) = script::run_file_in(&engine, &mut scope, file) {
            if let Some(sig) = clonet::interrupt::signal() {
                drop(engine);
                lab.teardown();
                eprintln!("clonet: interrupted; lab {name} torn down");
                return ExitCode::from((128 + sig) as u8);
            }
            eprint!("{}", report.render(&script::report::read_source, color()));
            status = ExitCode::FAILURE;
        }
    }
    if let (After::Serve { gui }, true) = (after, status == ExitCode::SUCCESS) {
        let run_dir = lab.local_lab().and_then(|l| l.run_dir().map(Path::to_path_buf)).unwrap_or_default();
        let socket = run_dir.join(clonet::lab::control::SOCKET);
        let _gui = if gui {
            match clonet::gui::Gui::start(&run_dir) {
                Ok(g) => {
                    eprintln!("clonet: web GUI at {} (this machine only)", g.url);
                    Some(g)
                }
                Err(e) => {
                    eprintln!("{}: starting the GUI: {e}", "warning".yellow().bold());
                    None
                }
            }
        } else {
            None
        };
        eprintln!("clonet: lab {name} is served on {}; stop it with `clonet stop {name}` or Ctrl-C", socket.display());
        while !clonet::interrupt::requested() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        drop(engine);
        lab.teardown();
        eprintln!("clonet: lab {name} torn down");
        return ExitCode::SUCCESS;
    }
    if after == After::Repl {
        clonet::interrupt::clear();
        clonet::interrupt::exit_on_termination(true);
        let mut repl = clonet::repl::Repl::new(lab.clone(), engine, scope, color());
        if let Err(e) = repl.interact() {
            eprintln!("clonet: terminal: {e}");
        }
        clonet::interrupt::exit_on_termination(false);
        status = ExitCode::SUCCESS;
    } else {
        drop(engine);
    }
    lab.teardown();
    status
}

fn console(node: &str, lab: Option<&str>) -> ExitCode {
    use clonet::host::console::{attach, ConsoleTarget};
    let found = rundir::labs_with_node(&rundir::base_dir(), node, lab);
    let (dir, state) = match found.as_slice() {
        [one] => one,
        [] => {
            let in_lab = lab.map(|l| format!(" in lab {l:?}")).unwrap_or_default();
            eprintln!("clonet: no running lab has a node called {node:?}{in_lab}");
            return ExitCode::FAILURE;
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(_, s)| s.lab.as_str()).collect();
            eprintln!("clonet: several labs have a node called {node:?} ({}): say which with --lab", names.join(", "));
            return ExitCode::FAILURE;
        }
    };
    let socket = clonet::host::guest::console_socket(dir, node);
    let target = match state.nodes.get(node).and_then(|p| p.first()) {
        _ if socket.exists() => ConsoleTarget::Socket(socket),
        Some(init) => ConsoleTarget::Namespace(init.pid),
        None => {
            eprintln!("clonet: node {node:?} is stopped");
            return ExitCode::FAILURE;
        }
    };
    match attach(node, &target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clonet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn capture(lab: &str, target: &str, count: Option<u64>) -> ExitCode {
    let Some(dir) = rundir::running_lab(&rundir::base_dir(), lab) else {
        eprintln!("clonet: no running lab is called {lab:?}");
        return ExitCode::FAILURE;
    };
    match clonet::lab::capture::follow(&dir, target, count, std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clonet: capture {target}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn clean() -> ExitCode {
    match rundir::clean(&rundir::base_dir()) {
        Ok(r) => {
            for lab in &r.removed {
                println!("removed lab {lab}");
            }
            if !r.killed.is_empty() {
                println!("killed processes {:?}", r.killed);
            }
            for m in &r.unmounted {
                println!("unmounted {m}");
            }
            for lab in &r.running {
                println!("left running lab {lab} alone");
            }
            if r.removed.is_empty() {
                println!("nothing to clean");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", "error".red().bold());
            ExitCode::FAILURE
        }
    }
}

fn doc(name: Option<&str>, json: bool, output: Option<&Path>) -> ExitCode {
    let engine = script::bare_engine(Path::new("."));
    if name.is_none() && !json {
        let text = script::docs::markdown(&script::docs::api_docs(&engine), &script::docs::stdlib_docs(&engine));
        return match output {
            None => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Some(path) => match std::fs::write(path, text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{}: cannot write {}: {e}", "error".red().bold(), path.display());
                    ExitCode::FAILURE
                }
            },
        };
    }
    let docs: Vec<_> =
        script::docs::api_docs(&engine).into_iter().filter(|d| name.is_none_or(|n| d.name == n)).collect();
    if docs.is_empty() {
        eprintln!("{}: no function called {:?}", "error".red().bold(), name.unwrap_or(""));
        return ExitCode::FAILURE;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&docs).expect("docs serialize"));
    } else {
        print!("{}", script::docs::render(&docs));
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: both set the environment.
    if matches!(cli.command, Cmd::NsInit { .. } | Cmd::NsEnter { .. }) {
        clonet::host::limits::restore_open_files();
    } else {
        clonet::host::limits::raise_open_files();
    }
    match cli.command {
        Cmd::Run { file, restore, name, interactive } => {
            // A restored lab keeps its name (and so its MACs) unless told.
            let saved_name = restore.as_deref().and_then(|d| {
                let text = std::fs::read(d.join(clonet::lab::rebuild::SAVED_LAB_FILE)).ok()?;
                serde_json::from_slice::<clonet::lab::rebuild::SavedLab>(&text).ok().map(|s| s.topology.lab)
            });
            let from = file.as_deref().or(restore.as_deref()).expect("clap requires one");
            let name = name.or(saved_name).unwrap_or_else(|| lab_name(from, None));
            session(file.as_deref(), restore.as_deref(), name, if interactive { After::Repl } else { After::TearDown })
        }
        Cmd::Repl { name } => session(None, None, name, After::Repl),
        Cmd::Serve { file, name, gui } => {
            let name = lab_name(&file, name);
            session(Some(&file), None, name, After::Serve { gui })
        }
        Cmd::Gui { lab } => {
            if let Err(code) = prepare_terminal() {
                return code;
            }
            gui(&lab)
        }
        Cmd::Ls { json } => clonet::remote::ls(json),
        Cmd::Graph { file, output, format } => graph(&file, output.as_deref(), format.as_deref()),
        Cmd::Attach { lab } => {
            if let Err(code) = prepare_terminal() {
                return code;
            }
            clonet::remote::attach(&lab, color())
        }
        Cmd::Exec { lab, node, timeout, argv } => {
            clonet::remote::exec(&lab, &node, argv, std::time::Duration::from_secs(timeout))
        }
        Cmd::Stop { lab } => clonet::remote::stop(&lab),
        Cmd::Clean => clean(),
        Cmd::Console { node, lab } => console(&node, lab.as_deref()),
        Cmd::Capture { lab, target, count } => capture(&lab, &target, count),
        Cmd::Image(cmd) => image(cmd),
        Cmd::Test { paths, filter, junit, json } => run_tests(paths, filter, junit, json),
        Cmd::Bench { names, json, quick, dir } => bench(&names, json, quick, &dir),
        Cmd::Exercise(cmd) => exercise(cmd),
        Cmd::Doc { name, json, output } => doc(name.as_deref(), json, output.as_deref()),
        Cmd::NsInit { hostname, hosts, root } => {
            let layers = match root.as_slice() {
                [lower, upper, work, merged] => Some(clonet::host::helpers::RootLayers {
                    lower: lower.clone(),
                    upper: upper.into(),
                    work: work.into(),
                    merged: merged.into(),
                }),
                _ => None,
            };
            ns_init_main(&hostname, &hosts, layers)
        }
        Cmd::NsEnter { pid, argv } => ns_enter_main(pid, &argv),
        Cmd::TapForward { pid_a, pid_b, owner } => clonet::host::tapfwd::tap_forward_main(pid_a, pid_b, owner),
    }
}
