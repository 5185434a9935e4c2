use multisession::MultiSession;

#[derive(Default)]
struct Cart {
    items: Vec<String>,
}

#[derive(MultiSession)]
struct Session {
    cart: Cart,
}

fn main() {}
