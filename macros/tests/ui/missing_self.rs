#[courier::service]
trait Calc {
    async fn add(a: u64, b: u64) -> u64;
}

fn main() {}
