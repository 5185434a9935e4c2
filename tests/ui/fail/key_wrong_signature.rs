use multisession::MultiSession;

fn by_chat(chat: i64) -> String {
    chat.to_string()
}

#[derive(MultiSession)]
struct Session {
    #[session(key = by_chat)]
    count: u32,
}

fn main() {}
