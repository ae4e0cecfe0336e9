use codebay_protocol::files::FILE_AGENT_ARG;

fn main() {
    // Inside the sandbox, run by init as the code's user: the session's file operations.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == FILE_AGENT_ARG)
    {
        std::process::exit(codebay_sandbox::file_agent::serve());
    }
    // `codebay doctor`: what this machine gives the sandbox.
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| a == codebay_sandbox::doctor::DOCTOR_ARG)
    {
        std::process::exit(codebay_sandbox::doctor::run(&args[1..]));
    }
    std::process::exit(codebay_sandbox::supervisor::run());
}
