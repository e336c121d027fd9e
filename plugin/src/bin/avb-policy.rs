//! `avb-policy`: check, explain, test, diff and render avb-edge policies with
//! the filter's own engine. See `avb-policy --help`.

fn main() -> std::process::ExitCode {
    avb_edge::cli::run()
}
