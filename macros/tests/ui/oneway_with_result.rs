#[courier::service]
pub trait Log {
    #[oneway]
    async fn line(&self, text: String) -> u64;
}

fn main() {}
