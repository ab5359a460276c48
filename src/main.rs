fn main() {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "__sandbox-exec") {
        servo::sandbox::helper_main();
    }
}
