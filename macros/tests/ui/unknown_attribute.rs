#[courier::service]
trait Calc {
    #[retry(3)]
    async fn add(&self, a: u64, b: u64) -> u64;
}

fn main() {}
