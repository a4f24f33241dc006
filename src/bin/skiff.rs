//! `skiff`: the command-line client of skiffd.

fn main() {
    let cli = match skiff::cli::parse::parse() {
        Ok(cli) => cli,
        Err(e) => skiff::cli::output::clap_exit(e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            skiff::cli::output::err_line(format_args!(
                "skiff: Error: cannot start the async runtime: {e}"
            ));
            std::process::exit(125);
        }
    };
    let code = rt.block_on(skiff::cli::run(cli));
    std::process::exit(code);
}
