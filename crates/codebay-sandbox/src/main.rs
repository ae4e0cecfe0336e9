fn main() {
    std::process::exit(codebay_sandbox::supervisor::run());
}
