"Packaging for sage_paper (nbdev 2 style: metadata comes from settings.ini)."
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=["="]); cfg.read("settings.ini", encoding="utf-8")
c = cfg["DEFAULT"]
setuptools.setup(
    name=c["lib_name"], version=c["version"], description=c["description"], license=c["license"],
    author=c["author"], author_email=c["author_email"], url=c["git_url"],
    packages=setuptools.find_packages(include=[c["lib_path"], c["lib_path"] + ".*"]),
    include_package_data=True, python_requires=">=" + c["min_python"],
    install_requires=c.get("requirements", "").split(),
    extras_require={"dev": c.get("dev_requirements", "").split()},
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown", zip_safe=False,
    entry_points={"console_scripts": c.get("console_scripts", "").split(), "nbdev": [f'{c["lib_path"]}={c["lib_path"]}._modidx:d']},
)
