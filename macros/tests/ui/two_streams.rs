#[courier::service]
pub trait Merge {
    async fn merge(&self, a: courier::Streaming<u64>, b: courier::Streaming<u64>) -> u64;
}

fn main() {}
