//! `skiff`: the command-line client of skiffd.

use clap::Parser;

fn main() {
    let cli = skiff::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: Error: cannot start the async runtime: {e}");
            std::process::exit(125);
        }
    };
    let code = rt.block_on(skiff::cli::run(cli));
    std::process::exit(code);
}
