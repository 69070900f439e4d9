// qsystemimage (dbustest.QSystemImage builds it) drives sysupdate's system-image API with the real client
// class of the UBports System Updates page (QSystemImage from
// liblomirisystemsettingsprivate), on the bus DBUS_SYSTEM_BUS_ADDRESS
// names. It prints every signal the class re-emits, one line each, and
// runs one scenario: full, pause, cancel or fail. Exit 0 when the
// scenario's last signal arrived, 1 on timeout.
#include <QCoreApplication>
#include <QDBusConnection>
#include <QTimer>
#include <cstdio>
#include <LomiriSystemSettings/private/systemimage.h>

using LomiriSystemSettings::QSystemImage;

static void say(const QString &s) {
    std::printf("%s\n", s.toUtf8().constData());
    std::fflush(stdout);
}

int main(int argc, char **argv) {
    QCoreApplication app(argc, argv);
    QString scenario = argc > 1 ? QString(argv[1]) : QString("full");
    QSystemImage si(QDBusConnection::systemBus());
    say(QString("info device=%1 channel=%2 current=%3 target=%4 mode=%5 failures_before_warning=%6")
            .arg(si.deviceName()).arg(si.channelName())
            .arg(si.currentBuildNumber()).arg(si.targetBuildNumber())
            .arg(si.downloadMode()).arg(si.failuresBeforeWarning()));
    bool acted = false;
    QObject::connect(&si, &QSystemImage::updateAvailableStatus,
        [&](bool avail, bool downloading, const QString &v, const int &size, const QString &date, const QString &err) {
            say(QString("updateAvailableStatus available=%1 downloading=%2 version=%3 size=%4 last_update=%5 error=%6")
                    .arg(avail).arg(downloading).arg(v).arg(size).arg(date).arg(err));
            if (avail && !downloading)
                si.downloadUpdate();
            if (!avail)
                app.exit(scenario == "uptodate" ? 0 : 1);
        });
    QObject::connect(&si, &QSystemImage::downloadStarted, [&]() { say("downloadStarted"); });
    QObject::connect(&si, &QSystemImage::updateProgress, [&](const int &pct, const double &eta) {
        say(QString("updateProgress %1 eta=%2").arg(pct).arg(eta));
        if (pct > 0 && !acted) {
            if (scenario == "pause") {
                acted = true;
                say("pauseDownload -> \"" + si.pauseDownload() + "\"");
            } else if (scenario == "cancel") {
                acted = true;
                say("cancelUpdate -> \"" + si.cancelUpdate() + "\"");
            }
        }
    });
    QObject::connect(&si, &QSystemImage::updatePaused, [&](const int &pct) {
        say(QString("updatePaused %1").arg(pct));
        if (scenario == "pause")
            si.downloadUpdate(); // resumes
    });
    QObject::connect(&si, &QSystemImage::updateDownloaded, [&]() {
        say("updateDownloaded");
        si.applyUpdate();
    });
    QObject::connect(&si, &QSystemImage::updateFailed, [&](const int &n, const QString &reason) {
        say(QString("updateFailed %1 %2").arg(n).arg(reason));
        if (scenario == "cancel" || scenario == "fail")
            app.exit(0);
    });
    QObject::connect(&si, &QSystemImage::updateProcessing, [&]() { say("updateProcessing"); });
    QObject::connect(&si, &QSystemImage::updateProcessFailed, [&](const QString &r) {
        say("updateProcessFailed " + r);
        app.exit(1);
    });
    QObject::connect(&si, &QSystemImage::rebooting, [&](const bool ok) {
        say(QString("rebooting %1").arg(ok));
        app.exit(ok ? 0 : 1);
    });
    // The test downloads by hand, as the page's button does: auto_download
    // off first, and the check once the service confirmed the setting.
    QObject::connect(&si, &QSystemImage::downloadModeChanged, [&]() {
        say(QString("downloadModeChanged %1").arg(si.downloadMode()));
        if (si.downloadMode() == 0)
            si.checkForUpdate();
    });
    if (si.downloadMode() == 0)
        si.checkForUpdate();
    else
        si.setDownloadMode(0);
    QTimer::singleShot(20000, [&]() { say("timeout"); app.exit(1); });
    return app.exec();
}
