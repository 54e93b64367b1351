#[courier::service]
trait Log {
    #[oneway]
    async fn record(&self, line: String);
}

fn main() {}
