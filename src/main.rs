fn main() {
    std::process::exit(glow_run::run(std::env::args_os()));
}
