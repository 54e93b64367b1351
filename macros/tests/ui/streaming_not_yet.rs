struct Streaming<T>(T);

#[courier::service]
trait Upload {
    async fn upload(&self, chunks: Streaming<Vec<u8>>) -> u64;
}

fn main() {}
