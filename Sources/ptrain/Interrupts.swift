// Ctrl-C and SIGTERM only raise a flag; the training loop finishes its step, saves and exits.
// A second signal during the save raises the same flag again and cannot tear the file.
import Foundation
import Synchronization

private let receivedSignal = Atomic<Int32>(0)

enum Interrupts {
    static func install() {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGINT, SIGTERM] {
            signal(s) { receivedSignal.store($0, ordering: .relaxed) }
            sigaddset(&set, s)
        }
        // A parent may have started us with these blocked (the mask survives exec); unblock them.
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// The first signal received, if any.
    static var received: Int32? {
        let s = receivedSignal.load(ordering: .relaxed)
        return s == 0 ? nil : s
    }
}
