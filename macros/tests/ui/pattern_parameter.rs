#[courier::service]
trait Calc {
    async fn add(&self, (a, b): (u64, u64)) -> u64;
}

fn main() {}
