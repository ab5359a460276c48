//! The `servo` command line: parse, dispatch; nothing else.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "servo",
    version,
    about = "Sandboxed continuous-delivery executor: runs signed bundles of Python scripts in a Linux sandbox",
    after_help = "\
Examples:
  servo serve --state-dir /tmp/servo-state          # a server on :5000, simulated portal
  servo token --state-dir /tmp/servo-state          # the token it generated
  servo run ./cd deploy.py test.py -v build-id:42   # from CI (SERVO_URL, SERVO_TOKEN)
  servo encrypt secrets.yml                         # writes secrets.yml.aes for a bundle

Flags shown with [env: NAME] can also be set in the environment; flags win.
`servo <COMMAND> --help` for details; the README covers the guide's flow and
Jenkins, docs/ the HTTP API, the Python package, the sandbox and deployment."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only obscure clap's derive
enum Command {
    /// Run the server (the main job).
    Serve(servo::config::ServeArgs),
    /// Send a bundle to a servo server and print its log live (for CI jobs).
    Run(servo::client::run::RunArgs),
    /// Encrypt files for a bundle (writes FILE.aes, `openssl enc` compatible).
    Encrypt(servo::client::crypt::EncryptArgs),
    /// Decrypt FILE.aes files (writes FILE).
    Decrypt(servo::client::crypt::DecryptArgs),
    /// Print the X-Signature value for a file.
    Sign(servo::client::crypt::SignArgs),
    /// Print the server's token (from the state directory).
    Token(servo::client::crypt::TokenCmdArgs),
    #[command(about = SANDBOX_ABOUT)]
    Sandbox(servo::client::sandbox::SandboxArgs),
    /// Check a seccomp policy or a tenants file (errors name the line).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

const SANDBOX_ABOUT: &str =
    "Run one command in the sandbox scripts get (for trying it, and for benchmarks)";

/// `servo sandbox` parsed on its own: `Cli` builds every subcommand's flags
/// first (~0.1 ms of CPU per call, perf, 2026-12-03), and a call's start is
/// the sandbox-start figure of SPEC §9. Same flags, help and errors.
#[derive(Parser)]
#[command(name = "servo-sandbox", bin_name = "servo sandbox", about = SANDBOX_ABOUT)]
struct SandboxCli {
    #[command(flatten)]
    args: servo::client::sandbox::SandboxArgs,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a seccomp policy (seccompiler JSON) or a tenants file; errors say where.
    Check {
        /// The file to check (default: the built-in seccomp policy).
        file: Option<std::path::PathBuf>,
    },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SERVO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    // Colours only for a terminal: a file or a journal gets plain text.
    // Each line also goes to the ring a pod's `/log` answers from (SPEC §13).
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr.and(servo::ochopod::logring::RingWriter))
        .with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

fn serve(args: servo::config::ServeArgs) -> ExitCode {
    init_logging(args.log_format == "json");
    let config = match servo::config::Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("servo: {e}");
            return ExitCode::from(2);
        }
    };
    // Few malloc arenas: the runtime's worker and blocking threads would
    // otherwise each grow one, and servo's memory with them (SPEC §9).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes glibc's allocator; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let worker_threads = config.worker_threads;
    servo::server::raise_open_files_limit();
    // Everything that can fail before listening (sandbox self-test included)
    // runs before the runtime's threads exist.
    let server = match servo::server::Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("servo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("servo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server.serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("servo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn crypt(result: Result<(), servo::client::crypt::CryptError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("servo: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn main() -> ExitCode {
    // The sandbox's launcher runs before anything else: a fresh,
    // single-threaded image of servo.
    match std::env::args_os().nth(1) {
        Some(a) if a == "__sandbox-launcher" => servo::sandbox::launcher_main(),
        Some(a) if a == "sandbox" => {
            let args = SandboxCli::parse_from(std::env::args_os().skip(1)).args;
            return servo::client::sandbox::sandbox_main(args);
        }
        _ => {}
    }
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Run(args) => servo::client::run::run_main(args),
        Command::Encrypt(args) => crypt(servo::client::crypt::encrypt_main(&args)),
        Command::Decrypt(args) => crypt(servo::client::crypt::decrypt_main(&args)),
        Command::Sign(args) => crypt(servo::client::crypt::sign_main(&args)),
        Command::Token(args) => crypt(servo::client::crypt::token_main(&args)),
        Command::Sandbox(args) => servo::client::sandbox::sandbox_main(args),
        Command::Policy(PolicyCommand::Check { file }) => {
            servo::client::sandbox::policy_check_main(file)
        }
    }
}
