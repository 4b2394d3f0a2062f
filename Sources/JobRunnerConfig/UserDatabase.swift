#if canImport(Glibc)
import Glibc
#endif

/// Looks up users and groups (NSS: /etc/passwd, LDAP, systemd-homed … whatever the machine
/// uses). Blocking: call while validating configuration, on the thread pool.
enum UserDatabase {
    struct User {
        var name: String
        var uid: UInt32
        var gid: UInt32
        var home: String
        var shell: String
    }

    /// A user by name or numeric uid.
    @available(*, noasync)
    /// This machine's host name (the default cluster node name), up to its first dot.
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "node" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let short = name.split(separator: ".").first.map(String.init) ?? name
        return short.isEmpty ? "node" : short
    }

    static func user(_ nameOrID: String) -> User? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        let rc: Int32
        if let uid = UInt32(nameOrID) {
            guard NodeReader.idRange.contains(uid) else { return nil }
            rc = getpwuid_r(uid, &entry, &buffer, buffer.count, &result)
        } else {
            rc = getpwnam_r(nameOrID, &entry, &buffer, buffer.count, &result)
        }
        guard rc == 0, result != nil else { return nil }
        return User(name: String(cString: entry.pw_name), uid: entry.pw_uid, gid: entry.pw_gid,
                    home: String(cString: entry.pw_dir), shell: String(cString: entry.pw_shell))
    }

    /// A group id by name or number.
    @available(*, noasync)
    static func group(_ nameOrID: String) -> UInt32? {
        if let gid = UInt32(nameOrID) { return NodeReader.idRange.contains(gid) ? gid : nil }
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 65_536)
        guard getgrnam_r(nameOrID, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return entry.gr_gid
    }

    /// The groups a user belongs to (as initgroups(3) would set them).
    @available(*, noasync)
    static func groups(of user: String, primary: UInt32) -> [UInt32] {
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(user, primary, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(user, primary, &groups, &count) >= 0 else { return [primary] }
        }
        return Array(groups.prefix(Int(count)))
    }
}
