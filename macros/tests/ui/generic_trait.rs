#[courier::service]
trait Store<T> {
    async fn get(&self, key: u32) -> T;
}

fn main() {}
