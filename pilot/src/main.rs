//! The `pilot` binary: flags, logging, run, exit.

use pilot::Args;

#[tokio::main]
async fn main() {
    let args: Args = mesh_runtime::parse_args("pilot");
    mesh_runtime::init_logging(&args.log);
    // Each error message already carries its cause: print it once, not once per source.
    let result =
        mesh_runtime::run_until_signal(mesh_runtime::DEFAULT_GRACE, |stop| pilot::run(args, stop))
            .await
            .unwrap_or(Ok(()));
    mesh_runtime::exit_on_error("pilot", result.map_err(|e| anyhow::anyhow!("{e}")));
}
