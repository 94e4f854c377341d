//! The subcommands of the `clonet` command line, one entry function each
//! in a file of its group, and what they share: the clap definitions
//! ([`Cli`], [`Cmd`]), the dispatch ([`run`]), colours and signal
//! handlers ([`prepare_terminal`]), output files. Every subcommand
//! returns `Result<ExitCode, CliError>`; errors are printed in one place
//! (`error.rs`).
//!
//! Owns: arguments, what the terminal shows, exit statuses. Must not
//! touch: lab logic (the library's), `unsafe` code.
mod bench;
mod error;
mod hidden;
mod host;
mod offline;
mod remote;
mod session;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use error::{exit_code, CliError};

#[derive(Parser)]
#[command(name = "clonet", version, about = "Virtual network labs scripted in Rhai, with a userspace switch")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a lab script; the lab lives while the script runs.
    Run {
        /// The .rhai script (optional with --restore), or a Kathará lab
        /// (its directory or lab.conf) or containerlab topology
        /// (*.clab.yml), run as the script `clonet convert` writes.
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
        /// Raise (or lower) the script's bounds: `operations=N|none`,
        /// `string=BYTES`, `array=N`, `map=N`, `time=SECONDS|none`, comma
        /// separated. By default a lab script has no bound on operations or
        /// time, 256 MiB strings, 16 Mi array items and 1 Mi map entries.
        #[arg(long, value_name = "KEY=VALUE,…")]
        limits: Option<String>,
        /// For a Kathará lab or containerlab topology: `host` runs nodes
        /// whose image this machine cannot have on the host's own root; a
        /// TOML file maps image names to "host" or "rootfs:DIR".
        #[arg(long, value_name = "host|MAP.toml")]
        images: Option<String>,
    },
    /// Run a lab script and keep the lab, without a REPL, until `clonet
    /// stop LAB`, Ctrl-C or SIGTERM; other terminals drive it meanwhile
    /// (`clonet attach`, `exec`, `capture`, `ls`).
    Serve {
        /// The .rhai script that builds the lab, or a Kathará lab or
        /// containerlab topology.
        file: PathBuf,
        /// Lab name (default: the script's file stem).
        #[arg(long)]
        name: Option<String>,
        /// Also serve the web GUI (its URL, with its access token, is printed).
        #[arg(long)]
        gui: bool,
        /// For a Kathará lab or containerlab topology: `host` runs nodes
        /// whose image this machine cannot have on the host's own root; a
        /// TOML file maps image names to "host" or "rootfs:DIR".
        #[arg(long, value_name = "host|MAP.toml")]
        images: Option<String>,
    },
    /// Write a Kathará lab (its directory or lab.conf) or a containerlab
    /// topology (*.clab.yml) as the Rhai script that builds the same lab,
    /// with comments where something has no direct equivalent.
    Convert {
        /// The lab to convert.
        lab: PathBuf,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// For a Kathará lab or containerlab topology: `host` runs nodes
        /// whose image this machine cannot have on the host's own root; a
        /// TOML file maps image names to "host" or "rootfs:DIR".
        #[arg(long, value_name = "host|MAP.toml")]
        images: Option<String>,
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
        /// The .rhai script, or a Kathará lab or containerlab topology.
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
        /// Run it as this user (`name`, `uid`, `name:group`) of the node
        /// (ns nodes); root by default.
        #[arg(long)]
        user: Option<String>,
        /// Run it in this directory of the node (the node's `/`, or an
        /// image's WorkingDir, by default).
        #[arg(long)]
        cwd: Option<String>,
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
    Exercise(test::ExerciseCmd),
    /// Guest images for uml (and later kvm) nodes.
    #[command(subcommand)]
    Image(host::ImageCmd),
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
        /// The engine's plan (JSON) for a root in a user namespace.
        #[arg(long)]
        split_plan: Option<String>,
        /// Host paths shown in the node (JSON).
        #[arg(long)]
        binds: Option<String>,
        /// A control group's `cgroup.procs` to join before anything else
        /// (the node's limits; one per hierarchy).
        #[arg(long)]
        cgroup: Vec<std::path::PathBuf>,
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
        /// The working directory in the node.
        #[arg(long)]
        cwd: Option<String>,
        /// Run as this user of the node (`name`, `uid`, `name:group`).
        #[arg(long)]
        user: Option<String>,
        /// A control group's `cgroup.procs` to join first (the node's limits).
        #[arg(long)]
        cgroup: Vec<std::path::PathBuf>,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    #[command(name = "__map-ids", hide = true)]
    MapIds { pid: u32, uid_map: String, gid_map: String },
    #[command(name = "__machine", hide = true)]
    Machine {
        /// A directory the machine works in (handed to it when root).
        #[arg(long)]
        own: Vec<std::path::PathBuf>,
        /// A file the machine reads (shown to it read-only when root).
        #[arg(long)]
        see: Vec<std::path::PathBuf>,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

/// Runs one subcommand.
pub fn run(command: Cmd) -> Result<ExitCode, CliError> {
    match command {
        Cmd::Run { file, restore, name, interactive, limits, images } => {
            session::run(file, restore, name, interactive, limits, images)
        }
        Cmd::Repl { name } => session::repl(name),
        Cmd::Serve { file, name, gui, images } => session::serve(&file, name, gui, images),
        Cmd::Convert { lab, output, images } => offline::convert(&lab, output.as_deref(), images.as_deref()),
        Cmd::Gui { lab } => remote::gui(&lab),
        Cmd::Ls { json } => Ok(remote::ls(json)),
        Cmd::Graph { file, output, format } => offline::graph(&file, output.as_deref(), format.as_deref()),
        Cmd::Attach { lab } => remote::attach(&lab),
        Cmd::Exec { lab, node, timeout, user, cwd, argv } => Ok(remote::exec(&lab, &node, timeout, user, cwd, argv)),
        Cmd::Stop { lab } => Ok(remote::stop(&lab)),
        Cmd::Clean => host::clean(),
        Cmd::Console { node, lab } => remote::console(&node, lab.as_deref()),
        Cmd::Capture { lab, target, count } => remote::capture(&lab, &target, count),
        Cmd::Image(cmd) => host::image(cmd),
        Cmd::Test { paths, filter, junit, json } => test::run_tests(paths, filter, junit, json),
        Cmd::Bench { names, json, quick, dir } => bench::bench(&names, json, quick, &dir),
        Cmd::Exercise(cmd) => test::exercise(cmd),
        Cmd::Doc { name, json, output } => offline::doc(name.as_deref(), json, output.as_deref()),
        Cmd::NsInit { split_plan, binds, cgroup, hostname, hosts, root } => {
            hidden::ns_init(&hostname, &hosts, &root, split_plan.as_deref(), binds.as_deref(), &cgroup)
        }
        Cmd::NsEnter { pid, cwd, user, cgroup, argv } => hidden::ns_enter(pid, &argv, cwd, user, &cgroup),
        Cmd::Machine { own, see, argv } => hidden::machine(own, see, &argv),
        Cmd::TapForward { pid_a, pid_b, owner } => hidden::tap_forward(pid_a, pid_b, owner),
        Cmd::MapIds { pid, uid_map, gid_map } => {
            Ok(ExitCode::from(clonet::host::userns::map_ids_main(pid, &uid_map, &gid_map) as u8))
        }
    }
}

/// Run by an ordinary user, a command that runs a lab's engine moves into
/// the lab's user namespace first (see `host::userns`), where it may make
/// nodes as root does. Must run before any thread starts. Where the kernel
/// forbids it, the lab runs without one: uml and kvm nodes still work.
pub fn enter_lab_namespace(command: &Cmd) {
    use clonet::host::userns;
    let engine = matches!(
        command,
        Cmd::Run { .. }
            | Cmd::Repl { .. }
            | Cmd::Serve { .. }
            | Cmd::Test { .. }
            | Cmd::Exercise(_)
            | Cmd::Bench { .. }
            // Container image layers keep their owners through the lab's
            // id map: they are unpacked, and deleted, inside it.
            | Cmd::Image(host::ImageCmd::Pull { .. } | host::ImageCmd::Gc)
    );
    if !engine || nix::unistd::geteuid().is_root() || std::env::var_os(userns::INSIDE_ENV).is_some() {
        return;
    }
    // The run base is the user's: decided while the user is still the user.
    if std::env::var_os("CLONET_RUN_DIR").is_none() {
        std::env::set_var("CLONET_RUN_DIR", clonet::lab::rundir::base_dir());
    }
    if let Err(e) = userns::enter() {
        eprintln!("clonet: {e}; going on without one: ns nodes cannot start");
    }
}

/// Whether stderr gets colours: a terminal, and no `NO_COLOR`.
fn color() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// What every command that runs labs does first: colours when stderr is a
/// terminal, and the interrupt handlers that let Ctrl-C tear labs down.
fn prepare_terminal() -> Result<(), CliError> {
    colored::control::set_override(color());
    clonet::interrupt::install().map_err(|e| CliError::clonet(format!("cannot install signal handlers: {e}")))
}

fn lab_name(file: &Path, name: Option<String>) -> String {
    name.unwrap_or_else(|| file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "lab".into()))
}

/// Writes an output file the user asked for.
fn write_output(path: &Path, text: &str) -> Result<(), CliError> {
    clonet::host::files::write_output(path, text.as_bytes())
        .map_err(|e| CliError::clonet(format!("writing {}: {e}", path.display())))
}

/// [`write_output`] for one of several outputs: a failure is printed and
/// the others are still written.
fn write_or_complain(path: &Path, text: &str) -> bool {
    write_output(path, text).inspect_err(CliError::print).is_ok()
}
